using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Airlock.Core.Api;
using Airlock.Testing;
using CliWrap;
using CliWrap.Buffered;

namespace Airlock.EscapeTests;

/// <summary>
/// One airlockd with one sandbox per boundary under attack, and the bait the attacks go for: a secret file and a
/// marked process on the host, a TCP listener on the host's loopback, and a target host in a network namespace this
/// fixture creates (TCP, UDP and ICMP listeners that count what reaches them). Nothing else is ever targeted.
/// </summary>
public sealed class EscapeFixture : IAsyncLifetime
{
    /// <summary>The boundaries under attack; each gets one shared sandbox. Adding "container" here adds it to every attack.</summary>
    public static readonly IReadOnlyList<string> BoundaryNames = ["process", "container", "microvm"];

    private readonly string _rand = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3));
    private readonly List<Process> _processes = [];
    private TcpListener? _loopback;

    public AirlockHost Host { get; private set; } = null!;

    public Dictionary<string, SandboxCreated> Sandboxes { get; } = [];

    public string Secret { get; } = "airlock-secret-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));

    public string SecretDir => $"/var/lib/airlock-escape-{_rand}";

    public string Marker => "airlock-marker-" + _rand;

    public int LoopbackPort { get; private set; }

    /// <summary>Connections the host loopback listener accepted (must stay 0).</summary>
    public int LoopbackHits;

    public string TargetNamespace => "alesc-" + _rand;

    public string TargetAddress { get; } = $"10.199.{RandomNumberGenerator.GetInt32(1, 250)}.2";

    public string TargetLog => Path.Combine(SecretDir, "target.log");

    public async Task InitializeAsync()
    {
        try
        {
            await StartAsync();
        }
        catch
        {
            await DisposeAsync(); // the target namespace and its server would outlive a failed start
            throw;
        }
    }

    private async Task StartAsync()
    {
        if (OperatingSystem.IsWindows())
        {
            throw new PlatformNotSupportedException("the escape suite runs on Linux");
        }

        Directory.CreateDirectory(SecretDir);
        await File.WriteAllTextAsync(Path.Combine(SecretDir, "secret.txt"), Secret);
        File.SetUnixFileMode(SecretDir, (UnixFileMode)0x1ED);
        File.SetUnixFileMode(Path.Combine(SecretDir, "secret.txt"), (UnixFileMode)0x1A4); // world-readable: only the boundary keeps it out

        _processes.Add(Process.Start(new ProcessStartInfo("python3", ["-c", "import time; time.sleep(900)", Marker]))!);

        _loopback = new TcpListener(IPAddress.Loopback, 0);
        _loopback.Start();
        LoopbackPort = ((IPEndPoint)_loopback.LocalEndpoint).Port;
        _ = Task.Run(async () =>
        {
            while (true)
            {
                using var client = await _loopback.AcceptTcpClientAsync();
                Interlocked.Increment(ref LoopbackHits);
            }
        });

        await StartTargetAsync();
        Host = await AirlockHost.StartAsync();
        foreach (var boundary in BoundaryNames)
        {
            Sandboxes[boundary] = await NewSandboxAsync(boundary, 900);
        }
    }

    /// <summary>A sandbox of exactly this boundary (a boundary named without a risk class is taken as asked).</summary>
    public Task<SandboxCreated> NewSandboxAsync(string boundary, int timeoutSeconds, CancellationToken cancellationToken = default, int? diskMB = null) =>
        Host.CreateSandboxAsync(new NewSandboxRequest { TemplateId = "base", Boundary = boundary, Timeout = timeoutSeconds, DiskMB = diskMB }, cancellationToken);

    /// <summary>
    /// The host processes that make up a sandbox: the runtime (bwrap, qemu, ...) whose command line names the sandbox,
    /// and everything below it.
    /// </summary>
    public static IReadOnlyList<int> HostProcessesOf(string sandboxId)
    {
        var parents = new Dictionary<int, int>();
        var roots = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid) || pid == Environment.ProcessId)
            {
                continue;
            }

            try
            {
                var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                parents[pid] = int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
                if (File.ReadAllText(Path.Combine(dir, "cmdline")).Contains(sandboxId, StringComparison.Ordinal))
                {
                    roots.Add(pid);
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // the process ended while we looked
            }
        }

        var found = new HashSet<int>(roots);
        for (var grew = true; grew;)
        {
            grew = false;
            foreach (var (pid, parent) in parents)
            {
                if (found.Contains(parent) && found.Add(pid))
                {
                    grew = true;
                }
            }
        }

        return [.. found.Order()];
    }

    /// <summary>SHA-256 of each file that exists (missing files hash to "missing"), to prove an attack changed nothing.</summary>
    public static Dictionary<string, string> Hashes(IEnumerable<string> paths)
    {
        var hashes = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var path in paths.Distinct(StringComparer.Ordinal))
        {
            try
            {
                using var stream = File.OpenRead(path);
                hashes[path] = Convert.ToHexStringLower(SHA256.HashData(stream));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                hashes[path] = "missing";
            }
        }

        return hashes;
    }

    /// <summary>A host of the fixture's own in a new namespace, reachable from the host, logging every packet it sees.</summary>
    private async Task StartTargetAsync()
    {
        var prefix = TargetAddress[..TargetAddress.LastIndexOf('.')];
        await Run("ip", "netns", "add", TargetNamespace);
        await Run("ip", "link", "add", "alesc" + _rand, "type", "veth", "peer", "name", "eth0", "netns", TargetNamespace);
        await Run("ip", "addr", "add", prefix + ".1/30", "dev", "alesc" + _rand);
        await Run("ip", "link", "set", "alesc" + _rand, "up");
        await Run("ip", "-n", TargetNamespace, "addr", "add", TargetAddress + "/30", "dev", "eth0");
        await Run("ip", "-n", TargetNamespace, "link", "set", "eth0", "up");
        await Run("ip", "-n", TargetNamespace, "link", "set", "lo", "up");
        // TCP 8080 and 53, UDP 53 and 5353: each hit is one line in the log. ICMP is answered by the kernel and
        // counted by the namespace's own counter (nft), read in TargetHitsAsync.
        var server = $$"""
            import socket, threading
            log = open({{Quote(TargetLog)}}, "a", buffering=1)
            def tcp(port):
                s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("{{TargetAddress}}", port)); s.listen(8)
                while True:
                    c, a = s.accept(); log.write(f"tcp {port} {a}\n"); c.close()
            def udp(port):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("{{TargetAddress}}", port))
                while True:
                    d, a = s.recvfrom(2048); log.write(f"udp {port} {a}\n"); s.sendto(d, a)
            for p in (8080, 53): threading.Thread(target=tcp, args=(p,), daemon=True).start()
            for p in (53, 5353): threading.Thread(target=udp, args=(p,), daemon=True).start()
            threading.Event().wait()
            """;
        _processes.Add(Process.Start(new ProcessStartInfo("ip", ["netns", "exec", TargetNamespace, "python3", "-c", server, Marker]))!);
        await Run("ip", "netns", "exec", TargetNamespace, "nft", "add table inet count; add chain inet count in { type filter hook input priority 0; }; add rule inet count in icmp type echo-request counter");

        // Prove the target answers when asked from where it should (the host itself), or every "blocked" below is hollow.
        var reachable = false;
        for (var i = 0; i < 50 && !reachable; i++)
        {
            try
            {
                using var probe = new TcpClient();
                await probe.ConnectAsync(IPAddress.Parse(TargetAddress), 8080).WaitAsync(TimeSpan.FromSeconds(1));
                reachable = true;
            }
            catch (Exception e) when (e is SocketException or TimeoutException)
            {
                await Task.Delay(100);
            }
        }

        Assert.True(reachable, $"the target {TargetAddress}:8080 does not answer the host; the network attacks would prove nothing");
    }

    /// <summary>Lines the target logged for traffic that did not come from the host itself, plus ICMP echo requests counted.</summary>
    public async Task<(IReadOnlyList<string> Foreign, long Pings)> TargetHitsAsync()
    {
        var hostSide = TargetAddress[..TargetAddress.LastIndexOf('.')] + ".1";
        var lines = File.Exists(TargetLog) ? await File.ReadAllLinesAsync(TargetLog) : [];
        var counter = await Cli.Wrap("ip").WithArguments(["netns", "exec", TargetNamespace, "nft", "list", "chain", "inet", "count", "in"]).ExecuteBufferedAsync();
        var packets = System.Text.RegularExpressions.Regex.Match(counter.StandardOutput, @"packets (\d+)");
        return (lines.Where(l => !l.Contains($"'{hostSide}'", StringComparison.Ordinal)).ToList(), packets.Success ? long.Parse(packets.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) : -1);
    }

    public async Task DisposeAsync()
    {
        if (Host is not null)
        {
            foreach (var sandbox in Sandboxes.Values)
            {
                await Host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
            }

            await Host.DisposeAsync();
            Host.DeleteDataDir();
        }

        foreach (var process in _processes)
        {
            process.Kill(entireProcessTree: true);
            process.Dispose();
        }

        _loopback?.Stop();
        await Cli.Wrap("ip").WithArguments(["netns", "del", TargetNamespace]).WithValidation(CommandResultValidation.None).ExecuteAsync();
        if (Directory.Exists(SecretDir))
        {
            Directory.Delete(SecretDir, recursive: true);
        }
    }

    private static string Quote(string s) => "\"" + s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal) + "\"";

    private static async Task Run(string tool, params string[] args)
    {
        var result = await Cli.Wrap(tool).WithArguments(args).WithValidation(CommandResultValidation.None).ExecuteBufferedAsync();
        Assert.True(result.ExitCode == 0, $"{tool} {string.Join(' ', args)}: {result.StandardError}");
    }
}
