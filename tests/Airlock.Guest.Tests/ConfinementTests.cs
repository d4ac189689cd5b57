using System.Diagnostics;
using System.Text;
using Airlock.Envd.Client;
using Airlock.Envd.Connect;

namespace Airlock.Guest.Tests;

/// <summary>
/// The agent as it runs in a microVM (root, <c>--confine-filter</c>): the sandbox user's commands start under the
/// process boundary's seccomp filter through the agent's own exec shim; root's keep root's rights; a command is never
/// run unconfined because the filter could not be installed.
/// </summary>
[Trait("Category", "Integration")]
public sealed class ConfinementTests(ConfinedAgentFixture agent, SandboxUserFixture user) : IClassFixture<ConfinedAgentFixture>, IClassFixture<SandboxUserFixture>
{
    private static async Task<(string Stdout, string Stderr, int Exit, uint Pid)> RunAsync(EnvdClient client, string script, string? user = null)
    {
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        var exit = -1;
        uint pid = 0;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await foreach (var output in client.StartAsync(new ProcessSpec { Command = "/bin/bash", Args = ["-c", script], User = user, Cwd = "/" }, timeout.Token))
        {
            switch (output)
            {
                case ProcessStarted s: pid = s.Pid; break;
                case ProcessStdout o: stdout.Append(Encoding.UTF8.GetString(o.Data.Span)); break;
                case ProcessStderr e: stderr.Append(Encoding.UTF8.GetString(e.Data.Span)); break;
                case ProcessExited x: exit = x.ExitCode; break;
            }
        }

        return (stdout.ToString(), stderr.ToString(), exit, pid);
    }

    private const string Probe = """
        echo "pid $$"
        grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status
        id -un
        unshare -Ur true 2>&1; echo "unshare exit $?"
        python3 -c 'import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); r = libc.syscall(250, 0, -3, 1, 0, 0); print("keyctl", r, os.strerror(ctypes.get_errno()) if r < 0 else "")'
        yes | head -c 2 >/dev/null; echo "yes status ${PIPESTATUS[0]}"
        """;

    [Fact(Timeout = 60_000)]
    public async Task The_sandbox_users_commands_run_under_the_seccomp_filter_with_ordinary_signals_and_their_own_pid()
    {
        var (stdout, stderr, exit, pid) = await RunAsync(agent.Client(), Probe, user.Name);
        Assert.True(exit == 0, stdout + stderr);
        Assert.Contains($"pid {pid}\n", stdout, StringComparison.Ordinal); // the shim and setpriv exec in place
        Assert.Contains(user.Name + "\n", stdout, StringComparison.Ordinal);
        Assert.Contains("Seccomp:\t2", stdout, StringComparison.Ordinal);
        Assert.Contains("NoNewPrivs:\t0", stdout, StringComparison.Ordinal); // installed as root: setuid programs still work
        Assert.Contains("unshare failed: Operation not permitted", stdout, StringComparison.Ordinal);
        Assert.Contains("keyctl -1 Operation not permitted", stdout, StringComparison.Ordinal);
        Assert.Contains("yes status 141", stdout, StringComparison.Ordinal); // SIGPIPE is the default again, not .NET's SIG_IGN
    }

    [Fact(Timeout = 60_000)]
    public async Task Roots_commands_keep_roots_rights()
    {
        var (stdout, stderr, _, _) = await RunAsync(agent.Client(), Probe, "root");
        Assert.Contains("root\n", stdout, StringComparison.Ordinal);
        Assert.Contains("Seccomp:\t0", stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("keyctl -1 Operation not permitted", stdout + stderr, StringComparison.Ordinal);
    }

    [Fact(Timeout = 30_000)]
    public async Task The_shim_refuses_to_run_a_command_it_cannot_confine()
    {
        foreach (var (filter, why) in new[] { (Path.Combine(agent.Dir, "missing.bpf"), "cannot confine"), (await WriteAsync("odd.bpf", new byte[12]), "not a whole number"), (await WriteAsync("empty.bpf", []), "not a whole number") })
        {
            var start = new ProcessStartInfo(agent.Agent) { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var arg in new[] { "--confine", filter, "--", "/bin/echo", "RAN-UNCONFINED" })
            {
                start.ArgumentList.Add(arg);
            }

            using var shim = Process.Start(start)!;
            var stdout = shim.StandardOutput.ReadToEndAsync();
            var stderr = shim.StandardError.ReadToEndAsync();
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            await shim.WaitForExitAsync(timeout.Token);
            Assert.Equal(126, shim.ExitCode);
            Assert.DoesNotContain("RAN-UNCONFINED", await stdout, StringComparison.Ordinal);
            Assert.Contains(why, await stderr, StringComparison.Ordinal);
        }
    }

    [Fact(Timeout = 30_000)]
    public async Task The_shim_runs_a_command_on_the_path_and_reports_a_missing_one_as_127()
    {
        var start = new ProcessStartInfo(agent.Agent) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in new[] { "--confine", agent.Filter, "--", "sh", "-c", "grep Seccomp: /proc/self/status" })
        {
            start.ArgumentList.Add(arg);
        }

        using (var shim = Process.Start(start)!)
        {
            var stdout = await shim.StandardOutput.ReadToEndAsync();
            await shim.WaitForExitAsync();
            Assert.Equal((0, "Seccomp:\t2\n"), (shim.ExitCode, stdout));
        }

        var missing = new ProcessStartInfo(agent.Agent, ["--confine", agent.Filter, "--", "/no/such/binary"]) { RedirectStandardError = true };
        using var failed = Process.Start(missing)!;
        var error = await failed.StandardError.ReadToEndAsync();
        await failed.WaitForExitAsync();
        Assert.Equal(127, failed.ExitCode);
        Assert.Contains("/no/such/binary", error, StringComparison.Ordinal);
    }

    [Theory(Timeout = 30_000)]
    [InlineData("BAD NAME")]
    [InlineData("BAD\nNAME")]
    [InlineData("1ABC")]
    [InlineData("A=B")]
    [InlineData("")]
    public async Task A_command_environment_variable_name_that_is_not_a_posix_name_is_refused(string name)
    {
        var e = await Assert.ThrowsAsync<EnvdException>(async () =>
        {
            await foreach (var _ in agent.Client().StartAsync(new ProcessSpec { Command = "/bin/true", Env = new Dictionary<string, string> { [name] = "x", ["GOOD_name_1"] = "y" } }, CancellationToken.None))
            {
            }
        });
        Assert.Equal(ConnectCodes.InvalidArgument, e.Code);
        Assert.Contains("not a POSIX name", e.Message, StringComparison.Ordinal);
    }

    private async Task<string> WriteAsync(string name, byte[] content)
    {
        var path = Path.Combine(agent.Dir, name);
        await File.WriteAllBytesAsync(path, content);
        return path;
    }
}
