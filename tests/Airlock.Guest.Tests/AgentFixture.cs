using System.Diagnostics;
using Airlock.Envd.Client;
using Airlock.Testing;

namespace Airlock.Guest.Tests;

/// <summary>
/// A real agent process on a free loopback port: the Native AOT binary from artifacts/guest when it was published
/// (what ships in sandboxes), otherwise the JIT build of the same project.
/// </summary>
public sealed class AgentFixture : IAsyncLifetime
{
    private Process? _process;

    public string Token { get; } = Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16));

    public Uri BaseAddress { get; private set; } = null!;

    public string Root { get; } = Directory.CreateTempSubdirectory("airlock-guest-test-").FullName;

    public HttpClient Http { get; } = new() { Timeout = TimeSpan.FromSeconds(60) };

    /// <summary>The agent's pid (to look at its memory in /proc).</summary>
    public int Pid => _process?.Id ?? throw new InvalidOperationException("the agent is not running");

    /// <summary>A client; with <paramref name="user"/>, every call (files too) names that user, as E2B's SDKs do.</summary>
    public EnvdClient Client(bool binary = false, string? token = null, string? user = null) =>
        new(Http, new EnvdClientOptions
        {
            BaseAddress = BaseAddress,
            AccessToken = token ?? Token,
            UseBinaryFormat = binary,
            Headers = user is null
                ? new Dictionary<string, string>()
                : new Dictionary<string, string> { ["Authorization"] = "Basic " + Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(user + ":")) },
        });

    public async Task InitializeAsync()
    {
        var port = Loopback.FreePort();
        BaseAddress = new Uri($"http://127.0.0.1:{port}/");
        var root = Repo.Root;
        var aot = Path.Combine(root, "artifacts", "guest", "airlock-guest");
        ProcessStartInfo start;
        if (File.Exists(aot))
        {
            start = new ProcessStartInfo(aot);
        }
        else
        {
            var dll = Directory.GetFiles(Path.Combine(root, "src", "Airlock.Guest", "bin"), "airlock-guest.dll", SearchOption.AllDirectories)
                .OrderByDescending(File.GetLastWriteTimeUtc).FirstOrDefault()
                ?? throw new InvalidOperationException("the guest agent is not built; run scripts/build.sh");
            start = new ProcessStartInfo("dotnet");
            start.ArgumentList.Add(dll);
        }

        start.ArgumentList.Add("--listen");
        start.ArgumentList.Add($"127.0.0.1:{port}");
        start.Environment["AIRLOCK_ACCESS_TOKEN"] = Token;
        start.Environment["AIRLOCK_SHOULD_NOT_LEAK"] = "x";
        start.Environment["HOME"] = Root;
        _process = await AgentProcess.StartAsync(start, () => Client().HealthAsync(CancellationToken.None));
    }

    public async Task DisposeAsync()
    {
        await AgentProcess.StopAsync(_process);
        Http.Dispose();
        Directory.Delete(Root, recursive: true);
    }
}
