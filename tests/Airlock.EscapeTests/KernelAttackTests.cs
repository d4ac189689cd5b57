namespace Airlock.EscapeTests;

/// <summary>Attacks on the kernel's global knobs, cgroups, terminals and privileged syscalls.</summary>
public sealed partial class EscapeAttemptTests
{
    private static readonly string[] HostKnobs = ["/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe", "/proc/sys/kernel/hostname", "/proc/sys/kernel/domainname"];

    private static Dictionary<string, string> ReadAll(IEnumerable<string> paths) =>
        paths.ToDictionary(p => p, p => File.Exists(p) ? File.ReadAllText(p) : "missing", StringComparer.Ordinal);

    [Theory(Timeout = 120_000)]
    [MemberData(nameof(Boundaries))]
    public async Task Kernel_knobs_cannot_be_written_and_masked_paths_show_nothing_of_the_host(string boundary)
    {
        // core_pattern and modprobe run a program as root on the host kernel when triggered; sysrq-trigger and
        // drop_caches act on the whole machine. Only harmless values are written ('h' prints sysrq help), and the
        // knobs that matter are compared on the host afterwards.
        var knobsBefore = ReadAll(HostKnobs);
        var hostKeys = File.Exists("/proc/keys") ? File.ReadAllLines("/proc/keys") : [];
        string output;
        try
        {
            output = await Attack(boundary, $$"""
                python3 - <<'PY'
                import os
                def write(path, data):
                    try:
                        with open(path, "w") as f:
                            f.write(data)
                        print("WROTE", path)
                    except OSError as e:
                        print("refused write", path, e.errno)
                def read(path):
                    try:
                        with open(path, "rb") as f:
                            print("READ", path, len(f.read(64)))
                    except OSError as e:
                        print("refused read", path, e.errno)
                write("/proc/sys/kernel/core_pattern", "|/tmp/airlock-escape-core %p")
                write("/proc/sys/kernel/modprobe", "/tmp/airlock-escape-modprobe")
                write("/proc/sys/kernel/hostname", "airlock-escape")
                write("/proc/sys/vm/drop_caches", "1")
                write("/proc/sysrq-trigger", "h")
                for path in ("/proc/kcore", "/sys/firmware/dmi/tables/DMI", "/sys/firmware/acpi/tables/DSDT", "/sys/kernel/debug/tracing/trace", "/dev/mem", "/dev/kmsg"):
                    read(path)
                try:
                    keys = open("/proc/keys").read().splitlines()
                except OSError as e:
                    keys = []; print("refused read /proc/keys", e.errno)
                for line in keys:
                    print("key", line)
                PY
                [ $? -eq 0 ] && echo {{End}}
                """);
        }
        finally
        {
            // Should a write have landed, put the host back before failing.
            foreach (var (path, value) in knobsBefore)
            {
                if (value != "missing" && File.ReadAllText(path) != value)
                {
                    File.WriteAllText(path, value);
                }
            }
        }

        Assert.Contains(End, output, StringComparison.Ordinal);
        Assert.DoesNotContain("WROTE", output, StringComparison.Ordinal);
        Assert.Equal(5, Count(output, "refused write"));
        Assert.DoesNotContain("READ", output, StringComparison.Ordinal);
        Assert.Equal(6, Count(output, "refused read /")); // kcore, DMI, DSDT, tracing, mem, kmsg: refused or absent
        foreach (var line in hostKeys)
        {
            Assert.DoesNotContain(line, output, StringComparison.Ordinal);
        }

        Assert.Equal(knobsBefore, ReadAll(HostKnobs));
    }

    [Theory(Timeout = 120_000)]
    [MemberData(nameof(Boundaries))]
    public async Task A_cgroup_release_agent_cannot_be_set(string boundary)
    {
        // CVE-2022-0492: mount a cgroup v1 hierarchy (directly, or as root of a fresh user namespace), set
        // release_agent to a program of ours and notify_on_release, and the host kernel runs it as root when the
        // cgroup empties. The host's own release_agent files are compared afterwards.
        var hostFiles = Directory.EnumerateDirectories("/sys/fs/cgroup")
            .SelectMany(h => new[] { Path.Combine(h, "release_agent"), Path.Combine(h, "notify_on_release"), Path.Combine(h, "airlock", fixture.Sandboxes[boundary].SandboxId, "notify_on_release") })
            .Where(File.Exists)
            .ToList();
        var before = ReadAll(hostFiles);
        var output = await Attack(boundary, $$"""
            mkdir -p /tmp/cg /tmp/cg2
            for c in rdma memory pids; do
              if mount -t cgroup -o $c cgroup /tmp/cg 2>/dev/null; then echo MOUNTED $c; umount /tmp/cg; else echo refused mount $c; fi
            done
            for f in $(find /sys/fs/cgroup /tmp/cg -maxdepth 4 \( -name release_agent -o -name notify_on_release \) 2>/dev/null | head -40); do
              if sh -c "echo /tmp/airlock-escape-agent > $f" 2>/dev/null; then echo WROTE $f; else echo refused write $f; fi
            done
            unshare -Urm sh -c 'mount -t cgroup -o rdma cgroup /tmp/cg2 && echo MOUNTED-in-userns rdma && echo /tmp/airlock-escape-agent > /tmp/cg2/release_agent && echo WROTE-in-userns' 2>&1
            echo "unshare exit $?"
            unshare -UrmC sh -c 'mount -t cgroup -o memory cgroup /tmp/cg2 && echo MOUNTED-in-userns memory && echo /tmp/airlock-escape-agent > /tmp/cg2/release_agent && echo WROTE-in-userns' 2>&1
            echo "unshare exit $?"
            echo {{End}}
            """);
        Assert.Contains(End, output, StringComparison.Ordinal);
        Assert.DoesNotContain("MOUNTED", output, StringComparison.Ordinal);
        Assert.DoesNotContain("WROTE", output, StringComparison.Ordinal);
        Assert.Equal(3, Count(output, "refused mount"));
        Assert.Equal(2, Count(output, "unshare exit"));

        // seccomp refuses unshare before any mount is tried (in a microVM: the guest agent's filter on user commands).
        Assert.Equal(2, Count(output, "unshare failed: Operation not permitted"));

        // In a microVM every step above could reach only the guest's own kernel (cgroup v2, no release_agent); the
        // host's hierarchies are out of its reach whatever the guest allows.
        Assert.Equal(before, ReadAll(hostFiles));
    }

    [Theory(Timeout = 120_000)]
    [MemberData(nameof(Boundaries))]
    public async Task Terminal_input_cannot_be_injected_with_tiocsti_or_tioclinux(string boundary)
    {
        // CVE-2017-5226 (bubblewrap): TIOCSTI pushes characters into the terminal the sandbox shares with whoever
        // started it, to be run after the sandbox exits. CVE-2019-10063 (flatpak): the same ioctl with high bits set
        // slipped past a filter comparing 64 bits. TIOCLINUX pastes the console selection. Tried on stdin, the
        // controlling tty (run under `script`, so there is one) and a pty the attack opens itself.
        var script = $$"""
            import ctypes, errno, fcntl, os
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            libc.syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_ulong, ctypes.c_void_p]
            TIOCSTI, TIOCLINUX = 0x5412, 0x541C
            def name(e):
                return errno.errorcode.get(e, str(e))
            def raw(label, fd, request, arg):
                buf = ctypes.create_string_buffer(arg)
                r = libc.syscall(16, fd, request, ctypes.cast(buf, ctypes.c_void_p))
                print(("INJECTED " if r == 0 else "refused ") + label, "" if r == 0 else name(ctypes.get_errno()), flush=True)
            def py(label, fd):
                try:
                    fcntl.ioctl(fd, TIOCSTI, b"x"); print("INJECTED " + label, flush=True)
                except OSError as e:
                    print("refused " + label, name(e.errno), flush=True)
            fds = {"stdin": 0}
            for dev in ("/dev/tty", "/dev/console", "/dev/tty0", "/dev/ttyS0", "/dev/hvc0"):
                try:
                    fds[dev] = os.open(dev, os.O_RDWR | os.O_NOCTTY if dev != "/dev/tty" else os.O_RDWR)
                except OSError as e:
                    print("cannot open", dev, name(e.errno))
            master, slave = os.openpty()
            fds["own-pty-slave"], fds["own-pty-master"] = slave, master
            for label, fd in fds.items():
                py(f"{label}:fcntl-tiocsti", fd)
                raw(f"{label}:tiocsti", fd, TIOCSTI, b"x")
                raw(f"{label}:tiocsti-high-bits", fd, TIOCSTI | (1 << 32), b"x")
                raw(f"{label}:tioclinux-paste", fd, TIOCLINUX, b"\x03")
                raw(f"{label}:tioclinux-high-bits", fd, TIOCLINUX | (1 << 32), b"\x03")
            print("tty-attack isatty", os.isatty(0), "variants", 5 * len(fds))
            """;
        var output = await Attack(boundary, $$"""
            cat > /tmp/tiocsti.py <<'PY'
            {{script}}
            PY
            echo "-- no tty"
            python3 /tmp/tiocsti.py < /dev/null
            echo "-- under a pty"
            if command -v script >/dev/null; then script -qec "python3 /tmp/tiocsti.py" /dev/null < /dev/null; else echo "no script(1)"; fi
            echo {{End}}
            """);
        Assert.Contains(End, output, StringComparison.Ordinal);
        Assert.Equal(2, Count(output, "tty-attack isatty"));
        Assert.Contains("tty-attack isatty True", output, StringComparison.Ordinal); // the second run really had a terminal
        // Under `script` the terminal echoes injected input into the output, so a line may start with stray "x"s.
        var attempts = System.Text.RegularExpressions.Regex.Matches(output, @"(INJECTED|refused) (\S+?:[\w-]+)[ \t]*([A-Z]*)")
            .Select(m => (Injected: m.Groups[1].Value == "INJECTED", Label: m.Groups[2].Value, Errno: m.Groups[3].Value))
            .ToList();
        var expected = System.Text.RegularExpressions.Regex.Matches(output, @"variants (\d+)").Sum(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(expected, attempts.Count);
        // seccomp refuses both ioctls by their low 32 bits, before the tty layer sees them (in a microVM too: the guest
        // agent starts user commands under the process boundary's filter, so even the guest's own terminals are safe).
        Assert.All(attempts, a => Assert.Equal((false, "EPERM"), (a.Injected, a.Errno)));

        // Whatever the guest allows, no process of the sandbox on the host holds one of the host's terminals.
        foreach (var pid in EscapeFixture.HostProcessesOf(fixture.Sandboxes[boundary].SandboxId))
        {
            foreach (var fd in Directory.Exists($"/proc/{pid}/fd") ? Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd") : [])
            {
                var target = new FileInfo(fd).LinkTarget ?? "";
                Assert.False(target.StartsWith("/dev/pts/", StringComparison.Ordinal) || target.StartsWith("/dev/tty", StringComparison.Ordinal) || target == "/dev/console", $"host process {pid} of the sandbox holds {target}");
            }
        }
    }

    [Theory(Timeout = 120_000)]
    [MemberData(nameof(Boundaries))]
    public async Task Namespaces_raw_sockets_and_the_kernels_riskier_interfaces_are_refused(string boundary)
    {
        // The syscalls container escapes start from: new user/mount namespaces (unshare, clone, clone3), raw and
        // packet sockets, kexec, userfaultfd and io_uring (favourite kernel-exploit primitives), the new mount API,
        // setns into a process outside the sandbox, and ptrace / process_vm_readv of the agent's parent.
        var output = await Attack(boundary, $$"""
            python3 - <<'PY'
            import ctypes, os, socket, struct
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            SIGCHLD, NEWNS, NEWUSER, NEWNET, NEWPID = 17, 0x20000, 0x10000000, 0x40000000, 0x20000000
            def attempt(name, nr, *args):
                # Each attempt in a child of its own: one that succeeds (a new user namespace, say) must not lend its
                # privileges to the next. clone returns 0 in its own child, which leaves at once.
                pid = os.fork()
                if pid:
                    os.waitpid(pid, 0); return
                r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
                if r == 0 and name.startswith("clone"):
                    os._exit(0)
                print(("ALLOWED " if r >= 0 else "refused ") + name, os.strerror(ctypes.get_errno()) if r < 0 else r, flush=True)
                os._exit(0)
            def sock(name, *args):
                try:
                    socket.socket(*args).close(); print("ALLOWED", name, flush=True)
                except OSError as e:
                    print("refused", name, e.strerror, flush=True)
            attempt("unshare-user", 272, NEWUSER)
            attempt("unshare-mount", 272, NEWNS)
            attempt("unshare-net", 272, NEWNET)
            attempt("clone-user", 56, NEWUSER | SIGCHLD, 0, 0, 0, 0)
            attempt("clone-user-mount-pid", 56, NEWUSER | NEWNS | NEWPID | SIGCHLD, 0, 0, 0, 0)
            args = ctypes.create_string_buffer(struct.pack("<QQQQQQQQ", NEWUSER, 0, 0, 0, SIGCHLD, 0, 0, 0))
            attempt("clone3-user", 435, args, 64)
            sock("raw-inet", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            sock("raw-inet6", socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
            sock("packet", socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
            attempt("kexec_load", 246, 0, 0, 0, 0)
            attempt("kexec_file_load", 320, -1, -1, 0, 0, 0)
            attempt("userfaultfd", 323, 0)
            attempt("userfaultfd-user-mode-only", 323, 1)
            params = ctypes.create_string_buffer(120)
            attempt("io_uring_setup", 425, 8, params)
            attempt("fsopen", 430, b"tmpfs", 0)
            attempt("open_tree", 428, -100, b"/", 1)
            agent = next((int(p) for p in os.listdir("/proc") if p.isdigit() and open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")[0].endswith(b"airlock-guest")), 1)
            parent = int(open(f"/proc/{agent}/stat").read().rsplit(")", 1)[1].split()[1]) or 1
            print("agent", agent, "parent", parent, flush=True)
            for target in sorted({agent, parent, 1}):
                attempt(f"ptrace-attach-{target}", 101, 16, target, 0, 0)
                attempt(f"ptrace-seize-{target}", 101, 0x4206, target, 0, 0)
                local, remote = ctypes.create_string_buffer(16), struct.pack("<QQ", 0x400000, 16)
                attempt(f"process_vm_readv-{target}", 310, target, struct.pack("<QQ", ctypes.addressof(local), 16), 1, remote, 1, 0)
                pidfd = libc.syscall(ctypes.c_long(434), ctypes.c_long(target), ctypes.c_long(0))
                print(("opened" if pidfd >= 0 else "refused") + f" pidfd_open-{target}")
                if pidfd >= 0:
                    attempt(f"setns-pidfd-{target}", 308, pidfd, NEWNS | NEWNET)
                    attempt(f"pidfd_getfd-{target}", 438, pidfd, 0, 0)
                    os.close(pidfd)
                try:
                    fd = os.open(f"/proc/{target}/ns/mnt", os.O_RDONLY)
                except OSError as e:
                    print("refused setns-mnt-open", target, e.strerror)
                else:
                    attempt(f"setns-mnt-{target}", 308, fd, NEWNS); os.close(fd)
            PY
            [ $? -eq 0 ] && echo {{End}}
            """);
        Assert.Contains(End, output, StringComparison.Ordinal);
        var lines = output.Split('\n').Where(l => l.StartsWith("ALLOWED ", StringComparison.Ordinal) || l.StartsWith("refused ", StringComparison.Ordinal)).ToList();
        Assert.True(lines.Count >= 20, output);
        var allowed = lines.Where(l => l.StartsWith("ALLOWED ", StringComparison.Ordinal)).Select(l => l.Split(' ')[1]).ToList();
        // In a microVM the guest agent's seccomp filter and the guest's sysctls refuse what the process boundary
        // refuses, so even the guest's own kernel shows the sandbox user no more than the host's shows a process sandbox.
        Assert.Empty(allowed);

        // pidfd_open only names a process; setns and pidfd_getfd through it are the attack, and are refused.
        Assert.Contains("refused setns-pidfd-1 ", output, StringComparison.Ordinal);
        Assert.Contains("refused ptrace-attach-1 ", output, StringComparison.Ordinal);
    }
}
