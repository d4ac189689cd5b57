using System.Collections.Concurrent;
using System.Diagnostics;
using Airlock.Envd.Connect;
using Airlock.Envd.Protocol.Process;

namespace Airlock.Guest;

/// <summary>The processes the agent started, by pid.</summary>
internal sealed partial class ProcessTable(AgentOptions options, AgentState state, Users users, ILogger<ProcessTable> logger) : IDisposable
{
    private readonly ConcurrentDictionary<uint, ManagedProcess> _processes = new();

    /// <summary>Where confined commands run (a microVM's guest, hardened as the table is made), or null.</summary>
    private readonly string? _commandCgroup = options.HardenGuest ? GuestHardening.Apply(logger) : null;

    public IEnumerable<ManagedProcess> Running => _processes.Values.Where(p => !p.HasExited);

    public ManagedProcess Start(StartRequest request, string? user)
    {
        var config = request.Process ?? throw new ConnectException(ConnectCodes.InvalidArgument, "process is required");
        if (string.IsNullOrEmpty(config.Cmd))
        {
            throw new ConnectException(ConnectCodes.InvalidArgument, "process.cmd is required");
        }

        foreach (var name in config.Envs.Keys)
        {
            if (!IsEnvironmentName(name))
            {
                throw new ConnectException(ConnectCodes.InvalidArgument, $"environment variable name '{name.ReplaceLineEndings(" ")}' is not a POSIX name ([A-Za-z_][A-Za-z0-9_]*)");
            }
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

        if (request.Pty is { } terminal && (terminal.Size is null || terminal.Size.Cols == 0 || terminal.Size.Rows == 0))
        {
            throw new ConnectException(ConnectCodes.InvalidArgument, "pty.size needs cols and rows above 0");
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
        using var pty = request.Pty is { } ptyRequest
            ? new PtyLease(Pty.Open(ptyRequest.Size.Cols, ptyRequest.Size.Rows, users.CanSwitch && account.Uid != users.Self.Uid ? account : null))
            : null;
        if (pty is not null)
        {
            // With a terminal: sh opens it as stdin, stdout and stderr and execs setsid, whose --ctty makes it the new
            // session's controlling terminal (TIOCSCTTY on stdin). Both exec in place, so the pid is still the command's.
            start.FileName = "/bin/sh";
            start.ArgumentList.Add("-c");
            start.ArgumentList.Add("exec 0<>\"$0\" 1>&0 2>&0 && exec setsid --ctty \"$@\"");
            start.ArgumentList.Add(pty.Pty.SlavePath);
        }
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

        if (options.ConfineFilter is { } filter && (account.Uid != 0 || options.ConfineRoot))
        {
            // The process boundary's seccomp filter and the command cgroup, installed by the agent's own binary while it
            // is still root (so sudo keeps working, filtered), before setpriv drops to the user (ConfinementShim).
            foreach (var arg in ConfinementShim.Prefix(filter, _commandCgroup))
            {
                start.ArgumentList.Add(arg);
            }
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

        var managed = new ManagedProcess(process, config, request.HasTag ? request.Tag : null, request.Stdin, pty?.Take());
        _processes[managed.Pid] = managed;
        LogStarted(logger, managed.Pid, config.Cmd);
        managed.Exited.ContinueWith(_ => _processes.TryRemove(managed.Pid, out var _), TaskScheduler.Default);
        if (_commandCgroup is { } cgroup)
        {
            // The command's leaf goes once it is empty (now, or at a later exit if it left processes behind).
            managed.Exited.ContinueWith(_ => ConfinementShim.PruneLeaves(cgroup), TaskScheduler.Default);
        }

        return managed;
    }

    /// <summary>POSIX's portable environment variable names: a letter or underscore, then letters, digits, underscores.</summary>
    internal static bool IsEnvironmentName(string name) =>
        name.Length > 0 && !char.IsAsciiDigit(name[0]) && name.AsSpan().IndexOfAnyExcept(EnvironmentNameChars) < 0;

    private static readonly System.Buffers.SearchValues<char> EnvironmentNameChars =
        System.Buffers.SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_");

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

    /// <summary>Disposes the terminal unless the process that uses it started.</summary>
    private sealed class PtyLease(Pty pty) : IDisposable
    {
        private Pty? _pty = pty;

        public Pty Pty => _pty ?? throw new ObjectDisposedException(nameof(PtyLease));

        public Pty Take() => Interlocked.Exchange(ref _pty, null) ?? throw new ObjectDisposedException(nameof(PtyLease));

        public void Dispose() => Interlocked.Exchange(ref _pty, null)?.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "started pid {Pid}: {Command}")]
    private static partial void LogStarted(ILogger logger, uint pid, string command);
}
