"""Peak resident memory of a code section, for tests that run it in a fresh subprocess.

getrusage's ru_maxrss is useless there: Linux carries the parent's peak into a child across
fork and exec, so a big pytest process hides the child's own growth. /proc's VmHWM can be
reset (write 5 to /proc/self/clear_refs) and then read back.
"""

PRELUDE = '''
def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

def peak_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
'''
