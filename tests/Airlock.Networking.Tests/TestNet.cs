using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Airlock.Core.Sandboxes;
using Microsoft.Extensions.Logging.Abstractions;

namespace Airlock.Networking.Tests;

/// <summary>
/// One test's sandbox networks and helper processes. Dispose removes every namespace and interface the
/// test created and kills every process it started; <see cref="AssertClean"/> proves it.
/// </summary>
internal sealed class TestNet : IAsyncDisposable
{
    private static readonly string StateDir = Path.Combine(Path.GetTempPath(), "airlock-nettests-" + Environment.ProcessId);
    private static readonly Lazy<string> Python = new(ResolvePython);

    private readonly List<SandboxNetwork> _networks = [];
    private readonly List<string> _extraNamespaces = [];
    private readonly List<Process> _processes = [];

    public TestNet(string? stateDir = null)
    {
        Options = new() { StateDir = stateDir ?? StateDir, ConnectTimeout = TimeSpan.FromSeconds(2) };
        RequireTool("ip", "-V");
        RequireTool("nft", "-v");
        Assert.True(Environment.IsPrivilegedProcess, "These integration tests create network namespaces and must run as root.");
        Manager = new NetnsNetworkManager(Options, NullLogger<NetnsNetworkManager>.Instance);
    }

    public NetworkOptions Options { get; }

    public NetnsNetworkManager Manager { get; }

    /// <summary>Marker passed to every helper process so a leak check can find stragglers.</summary>
    public string Marker { get; } = "altest-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(5));

    public static string NewSandboxId()
    {
        const string alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
        return "t" + RandomNumberGenerator.GetString(alphabet, 19);
    }

    public async Task<SandboxNetwork> CreateAsync(string sandboxId, CancellationToken ct)
    {
        var network = await Manager.CreateAsync(sandboxId, NetworkPolicy.DenyAll, ct);
        lock (_networks)
        {
            _networks.Add(network);
        }

        return network;
    }

    public void TrackNamespace(string name) => _extraNamespaces.Add(name);

    public void Track(SandboxNetwork network)
    {
        lock (_networks)
        {
            _networks.Add(network);
        }
    }

    /// <summary>Starts a TCP server inside <paramref name="ns"/> that answers every connection with <paramref name="reply"/>.</summary>
    public Task StartTcpServerAsync(string ns, string address, int port, string reply) =>
        StartPythonAsync(ns, """
            import socket, sys
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
            print("READY", flush=True)
            while True:
                c, _ = s.accept()
                c.sendall(sys.argv[3].encode()); c.close()
            """, address, port.ToString(System.Globalization.CultureInfo.InvariantCulture), reply);

    /// <summary>Starts a UDP echo server inside <paramref name="ns"/>.</summary>
    public Task StartUdpEchoAsync(string ns, string address, int port) =>
        StartPythonAsync(ns, """
            import socket, sys
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((sys.argv[1], int(sys.argv[2])))
            print("READY", flush=True)
            while True:
                d, a = s.recvfrom(2048); s.sendto(d, a)
            """, address, port.ToString(System.Globalization.CultureInfo.InvariantCulture), "");

    /// <summary>Runs a bounded python snippet inside <paramref name="ns"/> and returns its stdout.</summary>
    public async Task<string> RunPythonAsync(string ns, string script, CancellationToken ct, params string[] args)
    {
        using var process = Start(ns, script, args);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(TimeSpan.FromSeconds(30));
        try
        {
            var stdout = process.StandardOutput.ReadToEndAsync(cts.Token);
            var stderr = process.StandardError.ReadToEndAsync(cts.Token);
            await process.WaitForExitAsync(cts.Token);
            return (await stdout).Trim() + (await stderr is { Length: > 0 } err ? " STDERR: " + err.Trim() : "");
        }
        finally
        {
            Kill(process);
        }
    }

    public static async Task<string> RunAsync(string program, params string[] args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi)!;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var stdout = await process.StandardOutput.ReadToEndAsync(cts.Token);
        var stderr = await process.StandardError.ReadToEndAsync(cts.Token);
        await process.WaitForExitAsync(cts.Token);
        Assert.True(process.ExitCode == 0, $"{program} {string.Join(' ', args)} failed: {stderr}");
        return stdout;
    }

    public static bool NamespaceExists(string ns) => File.Exists("/run/netns/" + ns);

    public static bool InterfaceExists(string name) => Directory.Exists("/sys/class/net/" + name);

    public static async Task<string> HostRoutesAsync() => await RunAsync("ip", "-4", "route", "show", "table", "all");

    public async ValueTask DisposeAsync()
    {
        foreach (var p in _processes)
        {
            Kill(p);
        }

        foreach (var network in _networks)
        {
            try
            {
                await Manager.DeleteAsync(network, CancellationToken.None);
            }
            catch (Exception)
            {
                // AssertClean reports what is left.
            }
        }

        foreach (var ns in _extraNamespaces)
        {
            if (NamespaceExists(ns))
            {
                await RunAsync("ip", "netns", "del", ns);
            }
        }

        AssertClean();
        foreach (var p in _processes)
        {
            p.Dispose();
        }
    }

    /// <summary>No namespace, interface or helper process created by this test remains.</summary>
    public void AssertClean()
    {
        foreach (var network in _networks)
        {
            Assert.False(NamespaceExists(network.Namespace), $"namespace {network.Namespace} leaked");
            Assert.False(InterfaceExists(network.HostInterface), $"interface {network.HostInterface} leaked");
        }

        foreach (var ns in _extraNamespaces)
        {
            Assert.False(NamespaceExists(ns), $"namespace {ns} leaked");
        }

        Assert.All(_processes, p => Assert.True(p.HasExited, $"helper process {p.Id} leaked"));
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            try
            {
                var cmdline = File.ReadAllText(Path.Combine(dir, "cmdline"));
                Assert.False(cmdline.Contains(Marker, StringComparison.Ordinal), $"process {dir} leaked: {cmdline.Replace('\0', ' ')}");
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
    }

    private async Task StartPythonAsync(string ns, string script, string a1, string a2, string a3)
    {
        var process = Start(ns, script, [a1, a2, a3]);
        _processes.Add(process);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        var line = await process.StandardOutput.ReadLineAsync(cts.Token);
        if (line != "READY")
        {
            var err = process.HasExited ? await process.StandardError.ReadToEndAsync(cts.Token) : "";
            Assert.Fail($"helper server in {ns} did not start: {line} {err}");
        }
    }

    private Process Start(string ns, string script, string[] args)
    {
        var psi = new ProcessStartInfo("ip")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardOutputEncoding = Encoding.UTF8,
        };
        foreach (var a in (string[])["netns", "exec", ns, Python.Value, "-c", script, .. args, Marker])
        {
            psi.ArgumentList.Add(a);
        }

        return Process.Start(psi) ?? throw new InvalidOperationException("cannot start ip netns exec");
    }

    private static void Kill(Process process)
    {
        try
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                process.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException)
        {
        }
    }

    private static void RequireTool(string program, string arg)
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo(program, arg) { RedirectStandardOutput = true, RedirectStandardError = true })!;
            p.WaitForExit(10_000);
            Assert.True(p.ExitCode == 0, $"'{program}' is required for the networking integration tests and failed.");
        }
        catch (System.ComponentModel.Win32Exception)
        {
            Assert.Fail($"'{program}' is required for the networking integration tests and is not installed.");
        }
    }

    private static string ResolvePython()
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("python3", ["-c", "import sys; print(sys.executable)"])
            {
                RedirectStandardOutput = true,
            })!;
            var path = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit(10_000);
            Assert.True(File.Exists(path), "python3 is required for the networking integration tests' helper servers.");
            return path;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            Assert.Fail("python3 is required for the networking integration tests' helper servers and is not installed.");
            throw;
        }
    }
}
