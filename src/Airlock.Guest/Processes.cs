using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Channels;
using Airlock.Envd.Connect;
using Airlock.Envd.Protocol.Process;
using Google.Protobuf;

namespace Airlock.Guest;

/// <summary>The processes the agent started, by pid.</summary>
internal sealed partial class ProcessTable(AgentOptions options, AgentState state, Users users, ILogger<ProcessTable> logger) : IDisposable
{
    private readonly ConcurrentDictionary<uint, ManagedProcess> _processes = new();

    public IEnumerable<ManagedProcess> Running => _processes.Values.Where(p => !p.HasExited);

    public ManagedProcess Start(StartRequest request, string? user)
    {
        if (request.Pty is not null)
        {
            throw new ConnectException(ConnectCodes.Unimplemented, "PTY sessions are not implemented by this agent yet; run the command without a pty");
        }

        var config = request.Process ?? throw new ConnectException(ConnectCodes.InvalidArgument, "process is required");
        if (string.IsNullOrEmpty(config.Cmd))
        {
            throw new ConnectException(ConnectCodes.InvalidArgument, "process.cmd is required");
        }

        if (request.HasTag && Running.Any(p => p.Tag == request.Tag))
        {
            throw new ConnectException(ConnectCodes.AlreadyExists, $"a running process already has tag '{request.Tag}'");
        }

        var account = users.Resolve(user, options.DefaultUser);
        var cwd = config.HasCwd && config.Cwd.Length > 0 ? Paths.Resolve(config.Cwd, account) : account.Home;
        if (!users.As(account, () => Directory.Exists(cwd)))
        {
            throw new ConnectException(ConnectCodes.InvalidArgument, $"working directory '{cwd}' does not exist or user '{account.Name}' may not reach it");
        }

        // setsid puts the command in its own session and process group (so a signal reaches everything it started)
        // and execs in place, so the pid we report is the command's own. As root, setpriv drops to the user.
        var start = new ProcessStartInfo("setsid")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = cwd,
        };
        if (options.CommandProcesses is { } processes)
        {
            // Counted per uid by the kernel: a command's fork bomb stops here, leaving the rest of the sandbox's pids
            // limit to the agent (which shares the uid in the process boundary).
            start.ArgumentList.Add("prlimit");
            start.ArgumentList.Add(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"--nproc={processes}"));
            start.ArgumentList.Add("--");
        }

        if (OomProtection.Protected)
        {
            // The agent's -1000 would be inherited: commands are ordinary candidates for the OOM killer again.
            start.ArgumentList.Add("choom");
            start.ArgumentList.Add("-n");
            start.ArgumentList.Add("0");
            start.ArgumentList.Add("--");
        }

        if (account.Uid != users.Self.Uid)
        {
            // The working directory is entered after the drop (env --chdir), so a user cannot start a command in a
            // directory it could not cd into itself.
            start.WorkingDirectory = "/";
            start.ArgumentList.Add("setpriv");
            start.ArgumentList.Add($"--reuid={account.Uid}");
            start.ArgumentList.Add($"--regid={account.Gid}");
            start.ArgumentList.Add("--init-groups");
            start.ArgumentList.Add("--");
            start.ArgumentList.Add("env");
            start.ArgumentList.Add($"--chdir={cwd}");
            start.ArgumentList.Add("--");
        }

        start.ArgumentList.Add(config.Cmd);
        foreach (var arg in config.Args)
        {
            start.ArgumentList.Add(arg);
        }

        start.Environment.Clear();
        foreach (var (name, value) in state.Environment)
        {
            start.Environment[name] = value;
        }

        start.Environment["HOME"] = account.Home;
        start.Environment["USER"] = account.Name;
        start.Environment["LOGNAME"] = account.Name;
        if (!start.Environment.ContainsKey("PATH"))
        {
            start.Environment["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        }

        foreach (var (name, value) in config.Envs)
        {
            start.Environment[name] = value;
        }

        Process process;
        try
        {
            process = Process.Start(start) ?? throw new ConnectException(ConnectCodes.Internal, "the process did not start");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new ConnectException(ConnectCodes.InvalidArgument, $"cannot start '{config.Cmd}': {e.Message}");
        }

        var managed = new ManagedProcess(process, config, request.HasTag ? request.Tag : null, request.Stdin);
        _processes[managed.Pid] = managed;
        LogStarted(logger, managed.Pid, config.Cmd);
        managed.Exited.ContinueWith(_ => _processes.TryRemove(managed.Pid, out var _), TaskScheduler.Default);
        return managed;
    }

    public ManagedProcess Find(ProcessSelector? selector)
    {
        ManagedProcess? found = selector?.SelectorCase switch
        {
            ProcessSelector.SelectorOneofCase.Pid => _processes.GetValueOrDefault(selector.Pid),
            ProcessSelector.SelectorOneofCase.Tag => _processes.Values.FirstOrDefault(p => p.Tag == selector.Tag),
            _ => throw new ConnectException(ConnectCodes.InvalidArgument, "a process selector (pid or tag) is required"),
        };
        return found is { HasExited: false }
            ? found
            : throw new ConnectException(ConnectCodes.NotFound, $"process {(selector!.SelectorCase == ProcessSelector.SelectorOneofCase.Pid ? selector.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture) : selector.Tag)} not found");
    }

    public void Dispose()
    {
        foreach (var process in _processes.Values)
        {
            process.Signal(9);
            process.Dispose();
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "started pid {Pid}: {Command}")]
    private static partial void LogStarted(ILogger logger, uint pid, string command);
}

/// <summary>
/// One process the agent started: pumps its output to every subscriber (the Start stream and any Connect streams).
/// It keeps running when its subscribers go away.
/// </summary>
internal sealed class ManagedProcess : IDisposable
{
    private readonly Process _process;
    private readonly Lock _gate = new();
    private readonly List<Channel<ProcessEvent>> _subscribers = [];
    private readonly TaskCompletionSource<ProcessEvent> _end = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _signalSent;

    public ManagedProcess(Process process, ProcessConfig config, string? tag, bool keepStdin)
    {
        _process = process;
        Config = config;
        Tag = tag;
        Pid = (uint)process.Id;
        FirstSubscription = Subscribe();
        if (!keepStdin)
        {
            process.StandardInput.Close();
        }

        var stdout = PumpAsync(process.StandardOutput.BaseStream, stderr: false);
        var stderr = PumpAsync(process.StandardError.BaseStream, stderr: true);
        Exited = FinishAsync(stdout, stderr);
    }

    public uint Pid { get; }

    /// <summary>Subscribed before the output pumps started, so the Start stream misses nothing.</summary>
    public ChannelReader<ProcessEvent> FirstSubscription { get; }

    public string? Tag { get; }

    public ProcessConfig Config { get; }

    public bool HasExited => _end.Task.IsCompleted;

    /// <summary>Completes after the end event was published.</summary>
    public Task Exited { get; }

    /// <summary>Subscribes to the events from now on; the channel completes after the end event.</summary>
    public ChannelReader<ProcessEvent> Subscribe()
    {
        var channel = Channel.CreateUnbounded<ProcessEvent>(new UnboundedChannelOptions { SingleReader = true });
        lock (_gate)
        {
            if (_end.Task.IsCompleted)
            {
                channel.Writer.TryWrite(_end.Task.Result);
                channel.Writer.TryComplete();
            }
            else
            {
                _subscribers.Add(channel);
            }
        }

        return channel.Reader;
    }

    public void Unsubscribe(ChannelReader<ProcessEvent> reader)
    {
        lock (_gate)
        {
            _subscribers.RemoveAll(c => c.Reader == reader);
        }
    }

    public async Task WriteStdinAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
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

    public void CloseStdin()
    {
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

    public void Dispose() => _process.Dispose();

    private async Task PumpAsync(Stream stream, bool stderr)
    {
        var buffer = new byte[32 * 1024];
        try
        {
            int read;
            while ((read = await stream.ReadAsync(buffer)) > 0)
            {
                var data = new ProcessEvent.Types.DataEvent();
                if (stderr)
                {
                    data.Stderr = ByteString.CopyFrom(buffer, 0, read);
                }
                else
                {
                    data.Stdout = ByteString.CopyFrom(buffer, 0, read);
                }

                Publish(new ProcessEvent { Data = data });
            }
        }
        catch (IOException)
        {
            // The pipe broke: the process is gone.
        }
    }

    private async Task FinishAsync(Task stdout, Task stderr)
    {
        await _process.WaitForExitAsync();

        // Output written just before exit is still in the pipes; a background child may hold them open forever, so
        // wait a short while for them to drain, then end.
        await Task.WhenAny(Task.WhenAll(stdout, stderr), Task.Delay(TimeSpan.FromMilliseconds(300)));
        var code = _process.ExitCode;
        var signal = Volatile.Read(ref _signalSent);
        var end = new ProcessEvent.Types.EndEvent { Exited = true, ExitCode = code, Status = $"exit status {code}" };
        if (signal != 0 && code == 128 + signal)
        {
            end.Exited = false;
            end.ExitCode = -1;
            end.Status = signal == 9 ? "signal: killed" : signal == 15 ? "signal: terminated" : $"signal: {signal}";
        }

        var e = new ProcessEvent { End = end };
        lock (_gate)
        {
            foreach (var subscriber in _subscribers)
            {
                subscriber.Writer.TryWrite(e);
                subscriber.Writer.TryComplete();
            }

            _subscribers.Clear();
            _end.TrySetResult(e);
        }
    }

    private void Publish(ProcessEvent e)
    {
        lock (_gate)
        {
            foreach (var subscriber in _subscribers)
            {
                subscriber.Writer.TryWrite(e);
            }
        }
    }
}
