using System.Text.Json.Nodes;
using Airlock.Core.Sandboxes;
using Airlock.Testing;
using CliWrap;
using CliWrap.Buffered;

namespace Airlock.EndToEnd;

/// <summary>
/// The real <c>e2b</c> npm package, unmodified, against airlockd: the current release (2.51.0, <c>e2b</c>) and the one
/// pinned before it (2.45.0, <c>e2b-2.45</c>), both installed by e2b/package.json. docs/e2b-compat.md is the contract.
/// </summary>
/// <remarks>E2B SDKs cannot name a risk class; airlockd's default risk decides (high: microvm, medium: container, low: process).</remarks>
[Trait("Category", "Integration")]
public sealed class E2bSdkTests
{
    private const string Current = "e2b";
    private const string Previous = "e2b-2.45";

    public static TheoryData<string, Risk> CompatCases => new()
    {
        { Current, Risk.Low },
        { Previous, Risk.Low },
        { Current, Risk.High },
        { Previous, Risk.High },
        { Current, Risk.Medium }, // the container: PTY, watchers and signed URLs in the third boundary too
    };

    /// <summary>What each boundary's pause keeps, as compat.mjs expects it (COMPAT_* in its header).</summary>
    private static Dictionary<string, string?> Capabilities(Risk risk) => risk switch
    {
        // The process boundary pauses its files only (processes start afresh); a microVM snapshots memory, or only its disk on request.
        Risk.Low => new() { ["COMPAT_PAUSE"] = "1", ["COMPAT_PAUSE_KEEPS_PROCESSES"] = "0", ["COMPAT_PAUSE_NO_MEMORY"] = "1", ["COMPAT_AUTOPAUSE"] = "1", ["COMPAT_ROOT"] = "0" },
        _ => new() { ["COMPAT_PAUSE"] = "1", ["COMPAT_PAUSE_KEEPS_PROCESSES"] = "1", ["COMPAT_PAUSE_NO_MEMORY"] = "1", ["COMPAT_AUTOPAUSE"] = "1", ["COMPAT_ROOT"] = "1" },
    };

    [Theory(Timeout = 480_000)]
    [MemberData(nameof(CompatCases))]
    public async Task The_e2b_js_sdk_runs_its_whole_surface_unmodified(string sdk, Risk risk)
    {
        var host = await AirlockHost.StartAsync(o => o with { DefaultRisk = risk });
        try
        {
            var seen = await RunNodeAsync(host, "compat.mjs", sdk, Capabilities(risk), TimeSpan.FromSeconds(420));
            // Every boundary pauses; what it keeps differs (Capabilities).
            Assert.Equal(sdk == Current ? "2.51.0" : "2.45.0", seen["sdkVersion"]!.GetValue<string>());
            Assert.True(seen["resumed"]?.GetValue<bool>() ?? false);
            Assert.True(seen["resumedWithoutMemory"]?.GetValue<bool>() ?? false);
            Assert.NotNull(seen["autoPaused"]);
            Assert.True(seen["reattached"]!.GetValue<bool>());
            Assert.Equal("SIZE=30 100", seen["ptyResized"]!.GetValue<string>());
            Assert.True(seen["metrics"]!["count"]!.GetValue<int>() >= 1);
            Assert.False(seen["isRunningAfterKill"]!.GetValue<bool>());

            // The gateway records who each command ran as: the SDK names a user only when asked (Basic auth).
            var starts = await ProcessStartsAsync(host, seen["sandboxId"]!.GetValue<string>());
            Assert.Contains(starts, s => s["user"]?.GetValue<string>() == "root" && s["args"]!.ToJsonString().Contains("id -un", StringComparison.Ordinal)); // asked for, even where refused
            Assert.Contains(starts, s => s["user"]?.GetValue<string>() == "user" && s["args"]!.ToJsonString().Contains("id -un", StringComparison.Ordinal));
            Assert.Empty(Leftovers.Find(host.SandboxIds.Concat(CreatedIds(seen)), host.DataDir));
        }
        finally
        {
            await host.DisposeAsync();
            host.DeleteDataDir();
        }
    }

    /// <summary>The short smoke run against the container boundary with the older SDK (the current one runs compat.mjs there).</summary>
    [Theory(Timeout = 300_000)]
    [InlineData(Previous)]
    public async Task The_e2b_js_sdk_creates_runs_streams_writes_reads_pauses_and_kills_a_container(string sdk)
    {
        var host = await AirlockHost.StartAsync(o => o with { DefaultRisk = Risk.Medium });
        try
        {
            var seen = await RunNodeAsync(host, "smoke.mjs", sdk, new() { ["SMOKE_PAUSE"] = "1" }, TimeSpan.FromSeconds(180));
            Assert.True(seen["resumed"]?.GetValue<bool>() ?? false);
            var audit = await host.Http.GetStringAsync("/audit");
            Assert.Contains("\"process.start\"", audit);
            Assert.Contains("/home/user/notes/hello.txt", audit);
            Assert.Empty(Leftovers.Find([seen["sandboxId"]!.GetValue<string>()], host.DataDir));
        }
        finally
        {
            await host.DisposeAsync();
            host.DeleteDataDir();
        }
    }

    /// <summary>Needs no boundary: the SDK's view of a sandbox id airlockd does not run (the gateway's 502, as E2B's edge).</summary>
    [Theory(Timeout = 120_000)]
    [InlineData(Current)]
    [InlineData(Previous)]
    public async Task A_sandbox_airlockd_does_not_run_is_not_running_for_the_e2b_sdk(string sdk)
    {
        var host = await AirlockHost.StartAsync();
        try
        {
            var seen = await RunNodeAsync(host, "not-running.mjs", sdk, [], TimeSpan.FromSeconds(90));
            Assert.False(seen["isRunning"]!.GetValue<bool>());
            Assert.Equal(502, seen["status"]!.GetValue<int>());
        }
        finally
        {
            await host.DisposeAsync();
            host.DeleteDataDir();
        }
    }

    /// <summary>Runs a script of e2b/ with the SDK pointed at <paramref name="host"/>; returns its last stdout line, which must say ok.</summary>
    private static async Task<JsonNode> RunNodeAsync(AirlockHost host, string script, string sdk, Dictionary<string, string?> extra, TimeSpan timeout)
    {
        var dir = Path.Combine(Repo.Root, "tests", "Airlock.EndToEnd", "e2b");
        Assert.True(Directory.Exists(Path.Combine(dir, "node_modules", sdk)), $"run `npm ci` in {dir} first (test.sh does)");
        var env = new Dictionary<string, string?>(extra)
        {
            ["E2B_API_URL"] = host.BaseUrl.ToString().TrimEnd('/'),
            ["E2B_SANDBOX_URL"] = host.BaseUrl.ToString().TrimEnd('/'),
            ["E2B_DOMAIN"] = host.Options.Domain,
            ["E2B_API_KEY"] = host.ApiKey,
            ["COMPAT_SDK"] = sdk,
            ["COMPAT_DEADLINE_MS"] = ((int)(timeout - TimeSpan.FromSeconds(20)).TotalMilliseconds).ToString(System.Globalization.CultureInfo.InvariantCulture),
        };
        using var cts = new CancellationTokenSource(timeout);
        var result = await Cli.Wrap("node").WithArguments([script]).WithWorkingDirectory(dir)
            .WithEnvironmentVariables(env).WithValidation(CommandResultValidation.None)
            .ExecuteBufferedAsync(cts.Token);
        var output = $"node {script} ({sdk}) exited {result.ExitCode}\nstdout:\n{result.StandardOutput}\nstderr:\n{result.StandardError}";
        var last = result.StandardOutput.Trim().Split('\n')[^1];
        JsonNode? seen = null;
        try
        {
            seen = JsonNode.Parse(last);
        }
        catch (System.Text.Json.JsonException)
        {
            // reported below with the whole output
        }

        Assert.True(result.ExitCode == 0 && seen?["ok"]?.GetValue<bool>() == true, output);
        return seen!;
    }

    /// <summary>The data of every <c>process.start</c> audit record of one sandbox.</summary>
    private static async Task<List<JsonNode>> ProcessStartsAsync(AirlockHost host, string sandboxId)
    {
        var starts = new List<JsonNode>();
        foreach (var line in (await host.Http.GetStringAsync("/audit")).Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var record = JsonNode.Parse(line)!;
            if (record["kind"]?.GetValue<string>() == "process.start" && record["sandboxId"]?.GetValue<string>() == sandboxId)
            {
                starts.Add(JsonNode.Parse(record["data"]!.GetValue<string>())!);
            }
        }

        return starts;
    }

    private static IEnumerable<string> CreatedIds(JsonNode seen) =>
        seen["listPages"]?.AsArray().SelectMany(page => page!.AsArray()).Select(id => id!.GetValue<string>()) ?? [];
}
