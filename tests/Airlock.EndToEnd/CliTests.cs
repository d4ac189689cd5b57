using System.Text.Json.Nodes;
using Airlock.Testing;
using CliWrap;
using CliWrap.Buffered;

namespace Airlock.EndToEnd;

/// <summary>The published <c>airlock</c> CLI against an in-process airlockd.</summary>
[Trait("Category", "Integration")]
public sealed class CliTests : IAsyncLifetime
{
    private AirlockHost _host = null!;

    public async Task InitializeAsync() => _host = await AirlockHost.StartAsync();

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        _host.DeleteDataDir();
    }

    private async Task<BufferedCommandResult> Airlock(params string[] args)
    {
        var dll = Path.Combine(Repo.Root, "artifacts", "cli", "airlock.dll");
        Assert.True(File.Exists(dll), "publish the CLI first (scripts/build.sh)");
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        return await Cli.Wrap("dotnet").WithArguments(["exec", dll, .. args])
            .WithEnvironmentVariables(new Dictionary<string, string?> { ["AIRLOCK_URL"] = _host.BaseUrl.ToString(), ["AIRLOCK_API_KEY"] = _host.ApiKey, ["AIRLOCK_DATA_DIR"] = _host.DataDir })
            .WithValidation(CommandResultValidation.None)
            .ExecuteBufferedAsync(cts.Token);
    }

    [Fact(Timeout = 240_000)]
    public async Task Create_exec_ls_cp_and_kill_work_and_exec_returns_the_commands_exit_code()
    {
        var created = await Airlock("sandbox", "create", "--risk", "low", "--json");
        Assert.True(created.ExitCode == 0, created.StandardError);
        var id = JsonNode.Parse(created.StandardOutput)!["sandboxID"]!.GetValue<string>();

        var exec = await Airlock("sandbox", "exec", id, "--", "echo out; echo err >&2; exit 5");
        Assert.Equal(5, exec.ExitCode);
        Assert.Equal("out\n", exec.StandardOutput);
        Assert.Contains("err", exec.StandardError);

        var ls = await Airlock("sandbox", "ls", "--json");
        Assert.Equal(0, ls.ExitCode);
        Assert.Contains(id, ls.StandardOutput);

        var local = Path.GetTempFileName();
        await File.WriteAllTextAsync(local, "copied in\n");
        var up = await Airlock("sandbox", "cp", local, $"{id}:/home/user/in.txt");
        Assert.True(up.ExitCode == 0, up.StandardError);
        var back = local + ".back";
        var down = await Airlock("sandbox", "cp", $"{id}:/home/user/in.txt", back);
        Assert.True(down.ExitCode == 0, down.StandardError);
        Assert.Equal("copied in\n", await File.ReadAllTextAsync(back));
        File.Delete(local);
        File.Delete(back);

        var kill = await Airlock("sandbox", "kill", id);
        Assert.Equal(0, kill.ExitCode);
        var again = await Airlock("sandbox", "kill", id);
        Assert.Equal(1, again.ExitCode);
        Assert.Contains("error", again.StandardError);
    }

    [Fact(Timeout = 240_000)]
    public async Task A_default_sandbox_is_a_microvm_that_pauses_resumes_and_shows_in_usage()
    {
        var created = await Airlock("sandbox", "create", "--json");
        Assert.True(created.ExitCode == 0, created.StandardError);
        var json = JsonNode.Parse(created.StandardOutput)!;
        var id = json["sandboxID"]!.GetValue<string>();
        Assert.Equal("microvm", json["boundary"]!["boundary"]!.GetValue<string>());

        var write = await Airlock("sandbox", "exec", id, "--", "echo kept > /home/user/k.txt; uname -r");
        Assert.Equal(0, write.ExitCode);
        Assert.Equal(json["boundary"]!["kernel"]!.GetValue<string>() + "\n", write.StandardOutput);

        var pause = await Airlock("sandbox", "pause", id);
        Assert.True(pause.ExitCode == 0, pause.StandardError);
        var again = await Airlock("sandbox", "pause", id);
        Assert.Equal(1, again.ExitCode);
        Assert.Contains("already paused", again.StandardError);

        var resume = await Airlock("sandbox", "resume", id);
        Assert.True(resume.ExitCode == 0, resume.StandardError);
        Assert.Contains("resumed", resume.StandardError);
        var read = await Airlock("sandbox", "exec", id, "--", "cat /home/user/k.txt");
        Assert.Equal("kept\n", read.StandardOutput);

        var usage = await Airlock("usage", "--json");
        Assert.True(usage.ExitCode == 0, usage.StandardError);
        var mine = JsonNode.Parse(usage.StandardOutput)!["sandboxes"]!.AsArray().Single(s => s!["sandboxID"]!.GetValue<string>() == id)!;
        Assert.True(mine["usage"]!["runningSeconds"]!.GetValue<double>() > 0);
        Assert.True(mine["usage"]!["pausedGiBHours"]!.GetValue<double>() > 0);
        Assert.Equal(0, (await Airlock("sandbox", "kill", id)).ExitCode);
    }

    [Fact(Timeout = 240_000)]
    public async Task Audit_verify_passes_on_a_clean_chain_and_names_the_record_where_one_byte_was_flipped()
    {
        var run = await Airlock("sandbox", "run", "--risk", "low", "--", "echo audited-run");
        Assert.True(run.ExitCode == 0, run.StandardError);
        Assert.Contains("audited-run", run.StandardOutput);

        var ok = await Airlock("audit", "verify", "--data-dir", _host.DataDir);
        Assert.True(ok.ExitCode == 0, ok.StandardOutput + ok.StandardError);

        await _host.DisposeAsync();
        var db = Path.Combine(_host.DataDir, "airlock.db");
        var bytes = await File.ReadAllBytesAsync(db);
        var marker = System.Text.Encoding.UTF8.GetBytes("audited-run");
        var at = bytes.AsSpan().IndexOf(marker);
        Assert.True(at >= 0, "the command line is stored in the audit chain");
        bytes[at] ^= 0x01;
        await File.WriteAllBytesAsync(db, bytes);

        var broken = await Airlock("audit", "verify", "--data-dir", _host.DataDir, "--json");
        Assert.Equal(1, broken.ExitCode);
        Assert.Contains("FirstBrokenSeq", broken.StandardOutput, StringComparison.OrdinalIgnoreCase);
        _host.DeleteDataDir(); // the tampered chain's airlockd is gone; the class goes on with a fresh one
        _host = await AirlockHost.StartAsync();
    }

    [Fact(Timeout = 60_000)]
    public async Task Doctor_says_which_boundaries_this_host_offers_and_why_not()
    {
        var doctor = await Airlock("doctor", "--json");
        Assert.Equal(0, doctor.ExitCode);
        Assert.Contains("bubblewrap", doctor.StandardOutput);
        Assert.Contains("qemu", doctor.StandardOutput);
    }
}
