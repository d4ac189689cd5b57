using System.Text;
using Airlock.Envd.Client;
using Airlock.Envd.Connect;
using Airlock.Envd.Protocol.Process;

namespace Airlock.Guest.Tests;

/// <summary>Terminal sessions (E2B's <c>sandbox.pty</c>): output, input, resize and kill over the real agent.</summary>
[Trait("Category", "Integration")]
public sealed class PtySessionTests(AgentFixture agent) : IClassFixture<AgentFixture>
{
    /// <summary>Starts a command on a terminal and reads its stream in the background.</summary>
    internal sealed class Session : IAsyncDisposable
    {
        private readonly StringBuilder _text = new();
        private readonly CancellationTokenSource _stop;
        private readonly TaskCompletionSource<uint> _pid = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly Task _reader;

        public Session(RawConnect connect, StartRequest request, CancellationToken cancellationToken)
        {
            _stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            _reader = Task.Run(async () =>
            {
                try
                {
                    await foreach (var response in connect.StreamAsync("process.Process/Start", request, StartResponse.Parser, _stop.Token))
                    {
                        Record(response.Event);
                    }
                }
                catch (Exception e)
                {
                    _pid.TrySetException(e);
                    throw;
                }
            }, CancellationToken.None);
        }

        public Task<uint> Pid => _pid.Task;

        public ProcessEvent.Types.EndEvent? End { get; private set; }

        public List<ProcessEvent.Types.DataEvent.OutputOneofCase> Kinds { get; } = [];

        public string Text
        {
            get
            {
                lock (_text)
                {
                    return _text.ToString();
                }
            }
        }

        public Task Finished => _reader;

        public async Task WaitForAsync(string text, CancellationToken cancellationToken)
        {
            while (!Text.Contains(text, StringComparison.Ordinal))
            {
                if (_reader.IsCompleted)
                {
                    await _reader;
                    Assert.Fail($"the session ended without printing '{text}'; it printed: {Text}");
                }

                await Task.Delay(20, cancellationToken);
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            try
            {
                await _reader;
            }
            catch (Exception e) when (e is OperationCanceledException or HttpRequestException or IOException)
            {
            }

            _stop.Dispose();
        }

        private void Record(ProcessEvent e)
        {
            switch (e.EventCase)
            {
                case ProcessEvent.EventOneofCase.Start:
                    _pid.TrySetResult(e.Start.Pid);
                    break;
                case ProcessEvent.EventOneofCase.Data:
                    lock (_text)
                    {
                        Kinds.Add(e.Data.OutputCase);
                        var bytes = e.Data.OutputCase switch
                        {
                            ProcessEvent.Types.DataEvent.OutputOneofCase.Pty => e.Data.Pty,
                            ProcessEvent.Types.DataEvent.OutputOneofCase.Stdout => e.Data.Stdout,
                            _ => e.Data.Stderr,
                        };
                        _text.Append(Encoding.UTF8.GetString(bytes.Span));
                    }

                    break;
                case ProcessEvent.EventOneofCase.End:
                    End = e.End;
                    break;
            }
        }
    }

    internal static StartRequest Pty(string script, uint cols = 100, uint rows = 30) => new()
    {
        Process = new ProcessConfig { Cmd = "/bin/bash", Args = { "-c", script }, Envs = { ["TERM"] = "xterm-256color" } },
        Pty = new PTY { Size = new PTY.Types.Size { Cols = cols, Rows = rows } },
    };

    internal static ProcessSelector ByPid(uint pid) => new() { Pid = pid };

    [Theory(Timeout = 60_000)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_pty_command_gets_the_terminal_as_controlling_tty_and_sees_resizes_and_typed_input(bool binary)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(50));
        var connect = new RawConnect(agent, binary);
        var script = "stty size; [ -t 0 ] && [ -t 1 ] && echo on-a-tty; echo hi >/dev/tty && echo has-ctty; read line; stty size; echo \"got:$line\"; exit 7";
        await using var session = new Session(connect, Pty(script), timeout.Token);
        var pid = await session.Pid;
        await session.WaitForAsync("has-ctty", timeout.Token);
        Assert.Contains("30 100", session.Text, StringComparison.Ordinal);
        Assert.Contains("on-a-tty", session.Text, StringComparison.Ordinal);

        await connect.UnaryAsync("process.Process/Update", new UpdateRequest { Process = ByPid(pid), Pty = new PTY { Size = new PTY.Types.Size { Cols = 120, Rows = 50 } } }, UpdateResponse.Parser, timeout.Token);
        await connect.UnaryAsync("process.Process/SendInput", new SendInputRequest { Process = ByPid(pid), Input = new ProcessInput { Pty = Google.Protobuf.ByteString.CopyFromUtf8("hello\n") } }, SendInputResponse.Parser, timeout.Token);
        await session.Finished;

        Assert.Contains("50 120", session.Text, StringComparison.Ordinal);
        Assert.Contains("got:hello", session.Text, StringComparison.Ordinal);
        Assert.Contains("hello\r\n", session.Text, StringComparison.Ordinal); // the terminal echoes what was typed
        Assert.All(session.Kinds, kind => Assert.Equal(ProcessEvent.Types.DataEvent.OutputOneofCase.Pty, kind));
        Assert.Equal(7, session.End?.ExitCode);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_pty_command_runs_as_the_requested_user_and_owns_its_terminal()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(50));
        var request = Pty("id -un; stat -c 'owner=%U' \"$(tty)\"");
        request.Process.Cwd = "/";
        await using var session = new Session(new RawConnect(agent, user: "nobody"), request, timeout.Token);
        await session.Finished;
        Assert.Contains("nobody\r\n", session.Text, StringComparison.Ordinal);
        Assert.Contains("owner=nobody", session.Text, StringComparison.Ordinal);
        Assert.Equal(0, session.End?.ExitCode);
    }

    [Fact(Timeout = 60_000)]
    public async Task Killing_a_pty_session_ends_it_with_the_signal()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(50));
        var connect = new RawConnect(agent);
        await using var session = new Session(connect, Pty("echo ready; sleep 300 & sleep 300"), timeout.Token);
        var pid = await session.Pid;
        await session.WaitForAsync("ready", timeout.Token);
        await connect.UnaryAsync("process.Process/SendSignal", new SendSignalRequest { Process = ByPid(pid), Signal = Signal.Sigkill }, SendSignalResponse.Parser, timeout.Token);
        await session.Finished;
        Assert.Equal("signal: killed", session.End?.Status);
        Assert.DoesNotContain(await agent.Client().ListAsync(timeout.Token), p => p.Pid == pid);
    }

    [Fact(Timeout = 60_000)]
    public async Task Terminal_calls_on_the_wrong_process_are_clear_errors_and_the_agent_keeps_working()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(50));
        var connect = new RawConnect(agent);
        var resize = new PTY { Size = new PTY.Types.Size { Cols = 80, Rows = 24 } };
        await using var plain = new Session(connect, new StartRequest { Process = new ProcessConfig { Cmd = "sleep", Args = { "30" } } }, timeout.Token);
        var pid = await plain.Pid;

        async Task<string> CodeOf(Func<Task> call) => (await Assert.ThrowsAsync<EnvdException>(call)).Code;

        Assert.Equal(ConnectCodes.FailedPrecondition, await CodeOf(() => connect.UnaryAsync("process.Process/Update", new UpdateRequest { Process = ByPid(pid), Pty = resize }, UpdateResponse.Parser, timeout.Token)));
        Assert.Equal(ConnectCodes.FailedPrecondition, await CodeOf(() => connect.UnaryAsync("process.Process/SendInput", new SendInputRequest { Process = ByPid(pid), Input = new ProcessInput { Pty = Google.Protobuf.ByteString.CopyFromUtf8("x") } }, SendInputResponse.Parser, timeout.Token)));
        Assert.Equal(ConnectCodes.NotFound, await CodeOf(() => connect.UnaryAsync("process.Process/Update", new UpdateRequest { Process = ByPid(999_999), Pty = resize }, UpdateResponse.Parser, timeout.Token)));
        Assert.Equal(ConnectCodes.InvalidArgument, await CodeOf(() => connect.UnaryAsync("process.Process/Update", new UpdateRequest { Pty = resize }, UpdateResponse.Parser, timeout.Token)));

        await using (var terminal = new Session(connect, Pty("cat"), timeout.Token))
        {
            var ptyPid = await terminal.Pid;
            Assert.Equal(ConnectCodes.InvalidArgument, await CodeOf(() => connect.UnaryAsync("process.Process/Update", new UpdateRequest { Process = ByPid(ptyPid), Pty = new PTY { Size = new PTY.Types.Size { Cols = 0, Rows = 10 } } }, UpdateResponse.Parser, timeout.Token)));
            Assert.Equal(ConnectCodes.FailedPrecondition, await CodeOf(() => connect.UnaryAsync("process.Process/CloseStdin", new CloseStdinRequest { Process = ByPid(ptyPid) }, CloseStdinResponse.Parser, timeout.Token)));
            await connect.UnaryAsync("process.Process/SendInput", new SendInputRequest { Process = ByPid(ptyPid), Input = new ProcessInput { Pty = Google.Protobuf.ByteString.CopyFrom(4) } }, SendInputResponse.Parser, timeout.Token);
            await terminal.Finished;
            Assert.Equal(0, terminal.End?.ExitCode); // Ctrl-D at the start of a line is end of input for cat
        }

        var zero = await Assert.ThrowsAsync<EnvdException>(async () =>
        {
            await foreach (var _ in connect.StreamAsync("process.Process/Start", Pty("true", cols: 0), StartResponse.Parser, timeout.Token))
            {
            }
        });
        Assert.Equal(ConnectCodes.InvalidArgument, zero.Code);

        await connect.UnaryAsync("process.Process/SendSignal", new SendSignalRequest { Process = ByPid(pid), Signal = Signal.Sigkill }, SendSignalResponse.Parser, timeout.Token);
        await plain.Finished;
        Assert.Equal("signal: killed", plain.End?.Status);
    }
}
