using System.Diagnostics;
using System.Threading.Channels;
using Airlock.Envd.Connect;
using Airlock.Envd.Protocol.Process;
using Google.Protobuf;

namespace Airlock.Guest;

/// <summary>
/// One process the agent started: pumps its output (pipes, or its terminal) to every subscriber (see
/// <see cref="ProcessEvents"/> for the buffering policy). It keeps running when its subscribers go away.
/// </summary>
internal sealed class ManagedProcess : IDisposable
{
    private static readonly TimeSpan DrainAfterExit = TimeSpan.FromMilliseconds(300);

    private readonly Process _process;
    private readonly Pty? _pty;
    private readonly ProcessEvents _events = new();
    private int _signalSent;

    public ManagedProcess(Process process, ProcessConfig config, string? tag, bool keepStdin, Pty? pty)
    {
        _process = process;
        _pty = pty;
        Config = config;
        Tag = tag;
        Pid = (uint)process.Id;
        FirstSubscription = _events.Subscribe();
        if (!keepStdin || pty is not null)
        {
            process.StandardInput.Close();
        }

        // With a terminal the pipes carry only what the wrapper says before it switches to the terminal (a failure
        // to open it); they reach EOF at the exec.
        var stdout = PumpAsync(process.StandardOutput.BaseStream, stderr: false);
        var stderr = PumpAsync(process.StandardError.BaseStream, stderr: true);
        var terminal = pty?.ReadAsync(data => _events.PublishAsync(Data(data, DataKind.Pty)).AsTask().GetAwaiter().GetResult()) ?? Task.CompletedTask;
        Exited = FinishAsync(stdout, stderr, terminal);
    }

    private enum DataKind
    {
        Stdout,
        Stderr,
        Pty,
    }

    public uint Pid { get; }

    /// <summary>Subscribed before the output pumps started, so the Start stream misses nothing.</summary>
    public ChannelReader<ProcessEvent> FirstSubscription { get; }

    public string? Tag { get; }

    public ProcessConfig Config { get; }

    public bool HasPty => _pty is not null;

    public bool HasExited => _events.HasEnded;

    /// <summary>Completes after the end event was published.</summary>
    public Task Exited { get; }

    /// <inheritdoc cref="ProcessEvents.Subscribe"/>
    public ChannelReader<ProcessEvent> Subscribe() => _events.Subscribe();

    public void Unsubscribe(ChannelReader<ProcessEvent> reader) => _events.Unsubscribe(reader);

    public async Task WriteStdinAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        if (_pty is not null)
        {
            // A terminal is the command's stdin: input sent as stdin is typed, like pty input.
            await _pty.WriteAsync(data, cancellationToken);
            return;
        }

        try
        {
            await _process.StandardInput.BaseStream.WriteAsync(data, cancellationToken);
            await _process.StandardInput.BaseStream.FlushAsync(cancellationToken);
        }
        catch (Exception e) when (e is ObjectDisposedException or IOException or InvalidOperationException)
        {
            throw new ConnectException(ConnectCodes.FailedPrecondition, $"stdin of process {Pid} is closed");
        }
    }

    public Task WritePtyAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        (_pty ?? throw NoPty()).WriteAsync(data, cancellationToken);

    public void Resize(uint cols, uint rows) => (_pty ?? throw NoPty()).Resize(cols, rows);

    public void CloseStdin()
    {
        if (_pty is not null)
        {
            throw new ConnectException(ConnectCodes.FailedPrecondition, $"process {Pid} reads a terminal; send Ctrl-D (0x04) as pty input to end its input");
        }

        try
        {
            _process.StandardInput.Close();
        }
        catch (IOException)
        {
            // Already closed by the other side.
        }
    }

    /// <summary>Signals the whole process group the command leads.</summary>
    public void Signal(int signal)
    {
        Interlocked.Exchange(ref _signalSent, signal);
        if (NativeMethods.kill(-(int)Pid, signal) != 0)
        {
            NativeMethods.kill((int)Pid, signal);
        }
    }

    public void Dispose()
    {
        _pty?.Dispose();
        _process.Dispose();
    }

    private ConnectException NoPty() =>
        new(ConnectCodes.FailedPrecondition, $"process {Pid} was not started with a pty");

    private static ProcessEvent Data(ReadOnlyMemory<byte> data, DataKind kind)
    {
        var bytes = ByteString.CopyFrom(data.Span);
        var e = new ProcessEvent.Types.DataEvent();
        switch (kind)
        {
            case DataKind.Stdout:
                e.Stdout = bytes;
                break;
            case DataKind.Stderr:
                e.Stderr = bytes;
                break;
            default:
                e.Pty = bytes;
                break;
        }

        return new ProcessEvent { Data = e };
    }

    private async Task PumpAsync(Stream stream, bool stderr)
    {
        var buffer = new byte[32 * 1024];
        try
        {
            int read;
            while ((read = await stream.ReadAsync(buffer)) > 0)
            {
                await _events.PublishAsync(Data(buffer.AsMemory(0, read), stderr ? DataKind.Stderr : DataKind.Stdout));
            }
        }
        catch (IOException)
        {
            // The pipe broke: the process is gone.
        }
    }

    private async Task FinishAsync(Task stdout, Task stderr, Task terminal)
    {
        await _process.WaitForExitAsync();

        // Output written just before exit is still in the pipes or the terminal; a background child may hold them open
        // forever, so wait a short while for them to drain, then end.
        _pty?.CloseSlave();
        await Task.WhenAny(Task.WhenAll(stdout, stderr, terminal), Task.Delay(DrainAfterExit));
        _pty?.StopReading();
        var code = _process.ExitCode;
        var signal = Volatile.Read(ref _signalSent);
        var end = new ProcessEvent.Types.EndEvent { Exited = true, ExitCode = code, Status = $"exit status {code}" };
        if (signal != 0 && code == 128 + signal)
        {
            end.Exited = false;
            end.ExitCode = -1;
            end.Status = signal == 9 ? "signal: killed" : signal == 15 ? "signal: terminated" : $"signal: {signal}";
        }

        _events.End(new ProcessEvent { End = end });

        // The master goes once its reader is done (a reader blocked on a slow subscriber holds its own reference).
        if (_pty is { } pty)
        {
            _ = terminal.ContinueWith(_ => pty.Dispose(), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
        }
    }
}
