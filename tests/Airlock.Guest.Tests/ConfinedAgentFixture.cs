using System.Diagnostics;
using Airlock.Boundaries.Seccomp;
using Airlock.Envd.Client;
using Airlock.Testing;

namespace Airlock.Guest.Tests;

/// <summary>
/// The published agent (artifacts/guest, as it ships in a microVM) started as root with <c>--confine-filter</c>: the
/// process boundary's seccomp filter, compiled here as airlockd compiles it for the guest. No <c>--harden-guest</c>:
/// that would change the host's own sysctls.
/// </summary>
public sealed class ConfinedAgentFixture : IAsyncLifetime
{
    private Process? _process;

    public string Token { get; } = Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16));

    public string Dir { get; } = Directory.CreateTempSubdirectory("airlock-guest-confined-").FullName;

    public string Agent { get; } = Path.Combine(Repo.Root, "artifacts", "guest", "airlock-guest");

    public string Filter => Path.Combine(Dir, "seccomp.bpf");

    public HttpClient Http { get; } = new() { Timeout = TimeSpan.FromSeconds(60) };

    public Uri BaseAddress { get; private set; } = null!;

    public EnvdClient Client(string? user = null) =>
        new(Http, new EnvdClientOptions
        {
            BaseAddress = BaseAddress,
            AccessToken = Token,
            Headers = user is null
                ? new Dictionary<string, string>()
                : new Dictionary<string, string> { ["Authorization"] = "Basic " + Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(user + ":")) },
        });

    public async Task InitializeAsync()
    {
        if (!File.Exists(Agent))
        {
            throw new InvalidOperationException("the guest agent is not published; run scripts/build.sh (the confinement shim is the AOT binary itself)");
        }

        await File.WriteAllBytesAsync(Filter, SeccompProfile.Compile(Dir).Bpf);
        var port = Loopback.FreePort();
        BaseAddress = new Uri($"http://127.0.0.1:{port}/");
        var start = new ProcessStartInfo(Agent);
        foreach (var arg in new[] { "--listen", $"127.0.0.1:{port}", "--confine-filter", Filter })
        {
            start.ArgumentList.Add(arg);
        }

        start.Environment["AIRLOCK_ACCESS_TOKEN"] = Token;
        start.Environment["HOME"] = Dir;
        _process = await AgentProcess.StartAsync(start, () => Client().HealthAsync(CancellationToken.None));
    }

    public async Task DisposeAsync()
    {
        await AgentProcess.StopAsync(_process);
        Http.Dispose();
        Directory.Delete(Dir, recursive: true);
    }
}
