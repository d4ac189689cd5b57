using System.Text.Json.Nodes;
using Airlock.Cli;

namespace Airlock.Sdk.Tests;

public sealed class CliTests
{
    private static async Task<(int ExitCode, string Stdout, string Stderr)> Airlock(Uri? url, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var env = new Dictionary<string, string>
        {
            ["AIRLOCK_URL"] = url?.ToString() ?? "http://127.0.0.1:1/",
            ["AIRLOCK_API_KEY"] = "e2b_cli",
            ["AIRLOCK_DATA_DIR"] = "/nonexistent/airlock-cli-tests",
        };
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var code = await AirlockCli.RunAsync(args, new CliConsole(stdout, stderr, name => env.GetValueOrDefault(name)), cts.Token);
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Theory(Timeout = 30_000)]
    [InlineData("sandbox", "create", "--risk", "extreme")]
    [InlineData("sandbox", "create", "--boundary", "vm")]
    [InlineData("sandbox", "create", "--timeout", "0")]
    [InlineData("sandbox", "create", "--env", "NOVALUE")]
    [InlineData("sandbox", "ls", "--metadata", "=x")]
    [InlineData("sandbox", "exec")]
    [InlineData("sandbox", "exec", "abcdefghij0123456789")]
    [InlineData("sandbox", "run", "--risk", "low")]
    [InlineData("sandbox", "cp", "a")]
    [InlineData("serve", "--default-risk", "none")]
    [InlineData("nosuchcommand")]
    public async Task A_bad_command_line_prints_an_error_and_exits_2(params string[] args)
    {
        var (code, stdout, stderr) = await Airlock(null, args);

        Assert.Equal(2, code);
        Assert.StartsWith("error: ", stderr, StringComparison.Ordinal);
        Assert.Equal("", stdout);
    }

    [Fact(Timeout = 30_000)]
    public async Task A_bad_url_is_a_usage_error()
    {
        var (code, _, stderr) = await Airlock(null, "--url", "ftp://127.0.0.1", "sandbox", "ls");

        Assert.Equal(2, code);
        Assert.Equal("error: 'ftp://127.0.0.1' is not an http(s) URL (expected something like http://127.0.0.1:8686).\n", stderr.ReplaceLineEndings("\n"));
    }

    [Fact(Timeout = 30_000)]
    public async Task Copy_needs_exactly_one_side_in_a_sandbox()
    {
        var neither = await Airlock(null, "sandbox", "cp", "/tmp/a", "/tmp/b");
        var both = await Airlock(null, "sandbox", "cp", "abcdefghij0123456789:/a", "abcdefghij0123456789:/b");

        Assert.Equal(2, neither.ExitCode);
        Assert.Contains("neither side", neither.Stderr, StringComparison.Ordinal);
        Assert.Equal(2, both.ExitCode);
        Assert.Contains("both sides", both.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Copy_plans_know_upload_from_download_and_keep_colons_in_local_paths()
    {
        var up = CopyPlan.Parse("./a:b.txt", "abcdefghij0123456789:/home/user/x");
        var down = CopyPlan.Parse("abcdefghij0123456789:/home/user/x", "out.txt");

        Assert.Equal(new CopyPlan(true, "abcdefghij0123456789", "/home/user/x", "./a:b.txt"), up);
        Assert.Equal(new CopyPlan(false, "abcdefghij0123456789", "/home/user/x", "out.txt"), down);
    }

    [Fact]
    public void One_command_argument_goes_to_bash_as_is_and_several_are_quoted_word_by_word()
    {
        Assert.Equal("echo out; exit 5", SandboxCommands.JoinCommand(["echo out; exit 5"]));
        Assert.Equal("python3 -c 'print(1)' 'it'\\''s'", SandboxCommands.JoinCommand(["python3", "-c", "print(1)", "it's"]));
        Assert.Equal("ls ''", SandboxCommands.JoinCommand(["ls", ""]));
    }

    [Theory]
    [InlineData(0, "exit status 0", 0)]
    [InlineData(5, "exit status 5", 5)]
    [InlineData(-1, "signal: killed", 137)]
    [InlineData(-1, "signal: terminated", 143)]
    [InlineData(-1, "something else", 1)]
    public void The_CLI_exits_with_the_sandbox_commands_code(int exitCode, string status, int expected)
    {
        Assert.Equal(expected, SandboxCommands.ExitCodeOf(new CommandExit(exitCode, status, null)));
    }

    [Fact(Timeout = 30_000)]
    public async Task Create_json_prints_the_created_sandbox_with_its_id()
    {
        await using var stub = new StubServer(r => r.Method == "POST" ? (201, Canned.Created) : (200, Canned.Detail));

        var (code, stdout, stderr) = await Airlock(stub.BaseUrl, "sandbox", "create", "--risk", "low", "--metadata", "team=blue", "--env", "A=1=2", "--json");

        Assert.True(code == 0, stderr);
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal(Canned.Id, json["sandboxID"]!.GetValue<string>());
        Assert.Equal("bubblewrap", json["boundary"]!["driver"]!.GetValue<string>());
        var body = JsonNode.Parse(stub.Requests.First(r => r.Method == "POST").Body)!;
        Assert.Equal("low", body["risk"]!.GetValue<string>());
        Assert.Equal("blue", body["metadata"]!["team"]!.GetValue<string>());
        Assert.Equal("1=2", body["envVars"]!["A"]!.GetValue<string>());
        Assert.Equal("e2b_cli", stub.Requests.First().Headers["X-API-Key"]);
        Assert.DoesNotContain(stub.Requests, r => r.Method == "DELETE");
    }

    [Fact(Timeout = 30_000)]
    public async Task Create_without_json_prints_just_the_id_on_stdout()
    {
        await using var stub = new StubServer(_ => (201, Canned.Created));

        var (code, stdout, stderr) = await Airlock(stub.BaseUrl, "sandbox", "create");

        Assert.True(code == 0, stderr);
        Assert.Equal(Canned.Id + "\n", stdout.ReplaceLineEndings("\n"));
        Assert.Contains("bubblewrap", stderr, StringComparison.Ordinal);
    }

    [Fact(Timeout = 30_000)]
    public async Task Ls_json_prints_the_list_and_passes_the_filters()
    {
        await using var stub = new StubServer(_ => (200, "[" + Canned.Detail + "]"));

        var (code, stdout, stderr) = await Airlock(stub.BaseUrl, "sandbox", "ls", "--state", "running", "--metadata", "team=blue", "--json");

        Assert.True(code == 0, stderr);
        Assert.Equal(Canned.Id, JsonNode.Parse(stdout)!.AsArray().Single()!["sandboxID"]!.GetValue<string>());
        Assert.Equal("/v2/sandboxes?state=running&metadata=team%3Dblue", Assert.Single(stub.Requests).PathAndQuery);
    }

    [Fact(Timeout = 30_000)]
    public async Task Ls_prints_a_table()
    {
        await using var stub = new StubServer(_ => (200, "[" + Canned.Detail + "]"));

        var (code, stdout, _) = await Airlock(stub.BaseUrl, "sandbox", "ls");

        Assert.Equal(0, code);
        Assert.Contains(Canned.Id, stdout, StringComparison.Ordinal);
        Assert.Contains("process (bubblewrap)", stdout, StringComparison.Ordinal);
        Assert.Contains("team=blue", stdout, StringComparison.Ordinal);
    }

    [Fact(Timeout = 30_000)]
    public async Task Killing_a_sandbox_that_is_gone_prints_the_servers_message_and_exits_1()
    {
        await using var stub = new StubServer(_ => (404, Canned.Error(404, "sandbox_not_found", "Sandbox abcdefghij0123456789 not found")));

        var (code, _, stderr) = await Airlock(stub.BaseUrl, "sandbox", "kill", Canned.Id);

        Assert.Equal(1, code);
        Assert.Equal("error: Sandbox abcdefghij0123456789 not found\n", stderr.ReplaceLineEndings("\n"));
        Assert.Equal("DELETE", Assert.Single(stub.Requests).Method);
    }

    [Fact(Timeout = 30_000)]
    public async Task An_unreachable_server_is_an_error_with_exit_1()
    {
        var (code, _, stderr) = await Airlock(null, "sandbox", "ls");

        Assert.Equal(1, code);
        Assert.StartsWith("error: cannot reach airlockd at http://127.0.0.1:1/", stderr, StringComparison.Ordinal);
    }

    [Fact(Timeout = 30_000)]
    public async Task Audit_commands_name_a_missing_data_directory()
    {
        var (code, _, stderr) = await Airlock(null, "audit", "verify", "--data-dir", "/nonexistent/airlock-x");

        Assert.Equal(1, code);
        Assert.Contains("/nonexistent/airlock-x", stderr, StringComparison.Ordinal);
    }
}
