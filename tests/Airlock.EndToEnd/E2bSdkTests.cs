using System.Text.Json.Nodes;
using Airlock.Core.Sandboxes;
using Airlock.Testing;
using CliWrap;
using CliWrap.Buffered;

namespace Airlock.EndToEnd;

/// <summary>The real <c>e2b</c> npm package (pinned in e2b/package.json), unmodified, against airlockd.</summary>
[Trait("Category", "Integration")]
public sealed class E2bSdkTests
{
    [Theory(Timeout = 300_000)]
    [InlineData(Risk.Low, false)]
    [InlineData(Risk.Medium, true)]
    [InlineData(Risk.High, true)]
    public async Task The_e2b_js_sdk_creates_runs_streams_writes_reads_lists_and_kills_unmodified(Risk risk, bool pause)
    {
        var dir = Path.Combine(Repo.Root, "tests", "Airlock.EndToEnd", "e2b");
        Assert.True(Directory.Exists(Path.Combine(dir, "node_modules", "e2b")), "run `npm ci` in tests/Airlock.EndToEnd/e2b first (test.sh does)");

        // E2B SDKs cannot name a risk class; airlockd's default risk decides (high: microvm, medium: container, low: process).
        var host = await AirlockHost.StartAsync(o => o with { DefaultRisk = risk });
        try
        {
            var env = new Dictionary<string, string?>
            {
                ["E2B_API_URL"] = host.BaseUrl.ToString().TrimEnd('/'),
                ["E2B_SANDBOX_URL"] = host.BaseUrl.ToString().TrimEnd('/'),
                ["E2B_DOMAIN"] = host.Options.Domain,
                ["E2B_API_KEY"] = host.ApiKey,
                ["SMOKE_PAUSE"] = pause ? "1" : "0",
            };
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(180));
            var result = await Cli.Wrap("node").WithArguments(["smoke.mjs"]).WithWorkingDirectory(dir)
                .WithEnvironmentVariables(env).WithValidation(CommandResultValidation.None)
                .ExecuteBufferedAsync(cts.Token);
            Assert.True(result.ExitCode == 0, $"node exited {result.ExitCode}\nstdout:\n{result.StandardOutput}\nstderr:\n{result.StandardError}");
            var seen = JsonNode.Parse(result.StandardOutput.Trim().Split('\n')[^1])!;
            Assert.True(seen["ok"]!.GetValue<bool>());
            Assert.Equal(pause, seen["resumed"]?.GetValue<bool>() ?? false);
            var id = seen["sandboxId"]!.GetValue<string>();

            var audit = await host.Http.GetStringAsync("/audit");
            Assert.Contains("\"process.start\"", audit);
            Assert.Contains("/home/user/notes/hello.txt", audit);
            Assert.Empty(Leftovers.Find([id], host.DataDir));
        }
        finally
        {
            await host.DisposeAsync();
            host.DeleteDataDir();
        }
    }
}
