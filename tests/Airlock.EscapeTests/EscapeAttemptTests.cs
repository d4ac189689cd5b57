using System.Globalization;
using Airlock.Testing;
using Xunit.Abstractions;

namespace Airlock.EscapeTests;

/// <summary>
/// Real attacks from inside each boundary, each our own re-enactment; every one must fail. Results per boundary are
/// tabulated in docs/security.md. Bounded: every network attempt has a 2 s timeout and runs once per target.
/// </summary>
[Trait("Category", "Integration")]
public sealed partial class EscapeAttemptTests(EscapeFixture fixture, ITestOutputHelper log) : IClassFixture<EscapeFixture>
{
    public static TheoryData<string> Boundaries => new(EscapeFixture.BoundaryNames);

    private async Task<string> Attack(string boundary, string script)
    {
        var (_, stdout, stderr) = await fixture.Host.RunAsync(fixture.Sandboxes[boundary], script);
        log.WriteLine($"--- {boundary}:\n{stdout}{stderr}"); // what the probe saw, for docs/security.md
        return stdout + stderr;
    }

    [Theory(Timeout = 120_000)]
    [MemberData(nameof(Boundaries))]
    public async Task Host_files_the_data_directory_and_other_sandboxes_stay_out_of_reach(string boundary)
    {
        var secret = Path.Combine(fixture.SecretDir, "secret.txt");
        var data = fixture.Host.DataDir;
        var others = string.Join(' ', fixture.Sandboxes.Where(s => s.Key != boundary).Select(s => $"{data}/sandboxes/{s.Value.SandboxId} {data}/sandboxes/{s.Value.SandboxId}/layer/upper"));
        var output = await Attack(boundary, $"""
            cat {secret} /proc/1/root{secret} /proc/self/root{secret} 2>&1
            for fd in /proc/self/fd/*; do cat "$fd{secret}" 2>/dev/null; done
            ls -la {data} {data}/sandboxes {others} 2>&1
            grep -rl {fixture.Secret} /var/lib /tmp /proc/1/cwd 2>/dev/null | head -3
            echo done
            """);
        Assert.DoesNotContain(fixture.Secret, output, StringComparison.Ordinal);
        Assert.DoesNotContain("airlock.db", output, StringComparison.Ordinal);
        Assert.Contains("done", output, StringComparison.Ordinal);
    }

    [Theory(Timeout = 120_000)]
    [MemberData(nameof(Boundaries))]
    public async Task Host_processes_are_invisible(string boundary)
    {
        var output = await Attack(boundary, "ps -eo pid,args 2>&1; cat /proc/*/cmdline 2>/dev/null | tr '\\0' ' '; echo; echo done");
        Assert.DoesNotContain(fixture.Marker, output, StringComparison.Ordinal);
        Assert.DoesNotContain("airlock.dll", output, StringComparison.Ordinal);
        Assert.Contains("done", output, StringComparison.Ordinal);
    }

    [Theory(Timeout = 120_000)]
    [MemberData(nameof(Boundaries))]
    public async Task The_hosts_loopback_services_cannot_be_reached(string boundary)
    {
        var hostAddress = System.Text.RegularExpressions.Regex.Match(fixture.Sandboxes[boundary].Boundary.Network, @"host (10\.\d+\.\d+\.\d+)").Groups[1].Value;
        Assert.NotEmpty(hostAddress);
        var before = Volatile.Read(ref fixture.LoopbackHits);
        var output = await Attack(boundary, $$"""
            python3 - <<'PY'
            import socket
            for host in ("127.0.0.1", "{{hostAddress}}", "10.254.0.1"):
                s = socket.socket(); s.settimeout(2)
                try:
                    s.connect((host, {{fixture.LoopbackPort}})); print("CONNECTED", host)
                except OSError as e:
                    print("blocked", host, e)
                finally:
                    s.close()
            PY
            """);
        Assert.DoesNotContain("CONNECTED", output, StringComparison.Ordinal);
        Assert.Equal(3, output.Split("blocked").Length - 1);
        Assert.Equal(before, Volatile.Read(ref fixture.LoopbackHits));
    }

    [Theory(Timeout = 180_000)]
    [MemberData(nameof(Boundaries))]
    public async Task A_host_outside_is_unreachable_by_tcp_udp_dns_and_icmp(string boundary)
    {
        var target = fixture.TargetAddress;
        var output = await Attack(boundary, $$"""
            python3 - <<'PY'
            import socket, struct
            def attempt(name, fn):
                try:
                    fn(); print("REACHED", name)
                except OSError as e:
                    print("blocked", name, e)
            def tcp(port):
                s = socket.socket(); s.settimeout(2); s.connect(("{{target}}", port)); s.close()
            def udp(port, payload):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
                s.sendto(payload, ("{{target}}", port)); s.recvfrom(2048)
            dns = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00" + struct.pack(">HH", 1, 1)
            def icmp():
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); s.settimeout(2)
                s.sendto(struct.pack(">BBHHH", 8, 0, 0, 0, 1) + b"airlock", ("{{target}}", 0)); s.recvfrom(2048)
            def raw():
                s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(2)
                s.sendto(struct.pack(">BBHHH", 8, 0, 0, 0, 1), ("{{target}}", 0)); s.recvfrom(2048)
            attempt("tcp-8080", lambda: tcp(8080))
            attempt("tcp-53", lambda: tcp(53))
            attempt("udp-5353", lambda: udp(5353, b"hello"))
            attempt("dns-udp-53", lambda: udp(53, dns))
            attempt("icmp-ping-socket", icmp)
            attempt("icmp-raw-socket", raw)
            try:
                socket.getaddrinfo("example.com", 80); print("REACHED resolver")
            except OSError as e:
                print("blocked resolver", e)
            PY
            """);
        Assert.DoesNotContain("REACHED", output, StringComparison.Ordinal);
        Assert.Equal(7, output.Split("blocked").Length - 1);
        var (foreign, pings) = await fixture.TargetHitsAsync();
        Assert.Empty(foreign);
        Assert.Equal(0, pings);
    }

    [Theory(Timeout = 120_000)]
    [MemberData(nameof(Boundaries))]
    public async Task Privileged_kernel_interfaces_are_refused(string boundary)
    {
        // As the sandbox user: mount, keyctl, bpf, perf_event_open, module load, ptrace of pid 1 and of the caller's own
        // child, setns. In the process and container boundaries seccomp and the missing capabilities refuse them; in a
        // microVM the guest agent starts user commands under the same seccomp filter, so the calls a well-formed
        // request would get through to the guest kernel (a session keyring, a software perf counter, tracing one's own
        // child) are refused with EPERM before the kernel looks at them.
        var output = await Attack(boundary, """
            python3 - <<'PY'
            import ctypes, os, signal, struct
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            def call(name, nr, *args):
                r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
                print(("ALLOWED " if r >= 0 else "refused ") + name, os.strerror(ctypes.get_errno()) if r < 0 else r, flush=True)
            call("mount", 165, b"none", b"/tmp", b"tmpfs", 0, 0)
            call("keyctl", 250, 0, -3, 1, 0, 0)  # KEYCTL_GET_KEYRING_ID of the session keyring, creating it
            call("bpf", 321, 0, 0, 0)
            attr = ctypes.create_string_buffer(struct.pack("<IIQ", 1, 128, 0) + bytes(112))  # software cpu-clock counter
            call("perf_event_open", 298, attr, 0, -1, -1, 0)
            call("init_module", 175, 0, 0, b"")
            call("ptrace-attach-1", 101, 16, 1, 0, 0)
            child = os.fork()
            if child == 0:
                signal.pause(); os._exit(0)
            call("ptrace-attach-own-child", 101, 16, child, 0, 0)
            os.kill(child, signal.SIGKILL); os.waitpid(child, 0)
            try:
                fd = os.open("/proc/1/ns/net", os.O_RDONLY)
            except OSError as e:
                print("refused setns-host-net (open)", e)
            else:
                call("setns-host-net", 308, fd, 0x40000000)
            PY
            grep -E '^(CapEff|CapPrm|NoNewPrivs|Seccomp):' /proc/self/status
            """);
        Assert.DoesNotContain("ALLOWED", output, StringComparison.Ordinal);
        Assert.Equal(8, output.Split("refused").Length - 1);
        foreach (var call in new[] { "keyctl", "bpf", "perf_event_open", "ptrace-attach-1", "ptrace-attach-own-child" })
        {
            Assert.Contains($"refused {call} Operation not permitted", output, StringComparison.Ordinal);
        }

        Assert.Contains("CapEff:\t0000000000000000", output, StringComparison.Ordinal);
        Assert.Contains("CapPrm:\t0000000000000000", output, StringComparison.Ordinal);
        Assert.Contains("Seccomp:\t2", output, StringComparison.Ordinal); // filtered in every boundary, the guest included
    }

    [Theory(Timeout = 120_000)]
    [MemberData(nameof(Boundaries))]
    public async Task The_reported_boundary_matches_what_a_probe_inside_finds(string boundary)
    {
        var report = fixture.Sandboxes[boundary].Boundary;
        var output = await Attack(boundary, "uname -r; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; grep MemTotal /proc/meminfo; nproc");
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(report.Boundary, boundary);
        Assert.Equal(report.Kernel, lines[0].Trim());
        var hostKernel = (await File.ReadAllTextAsync("/proc/sys/kernel/osrelease")).Trim();
        if (boundary is "process" or "container")
        {
            Assert.Equal(hostKernel, lines[0].Trim());
            Assert.Contains("Seccomp:\t2", output, StringComparison.Ordinal); // the filter the report names is on
            Assert.Contains("NoNewPrivs:\t1", output, StringComparison.Ordinal);
        }
        else
        {
            Assert.NotEqual(hostKernel, lines[0].Trim());
            var memKiB = long.Parse(System.Text.RegularExpressions.Regex.Match(output, @"MemTotal:\s+(\d+)").Groups[1].Value, CultureInfo.InvariantCulture);
            Assert.InRange(memKiB / 1024, report.Limits.MemoryMiB * 80 / 100, report.Limits.MemoryMiB);
            Assert.Equal(report.Limits.VCpus.ToString(CultureInfo.InvariantCulture), lines[^1].Trim());
        }
    }
}
