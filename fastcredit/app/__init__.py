"""The command-line application (``fastcredit train | reproduce | bench | info``) and its
datasets. The library never imports it; it builds every model through
:func:`fastcredit.convert` and needs the ``app`` extra (matplotlib, tqdm, numpy)."""
