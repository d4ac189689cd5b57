using System.Runtime.InteropServices;

namespace Airlock.Guest;

/// <summary>
/// <c>airlock-guest --confine FILTER [--cgroup DIR] -- COMMAND [ARGS…]</c>: the agent's binary as an exec shim between
/// the agent and a command it confines. While still root it joins a leaf of the command cgroup, installs the seccomp filter
/// (classic BPF, compiled on the host from the process boundary's profile) and execs the rest of the chain (setpriv,
/// which drops to the user, then the command), so everything the command ever becomes stays filtered.
/// </summary>
/// <remarks>
/// As root (CAP_SYS_ADMIN) the filter is installed without no_new_privs, so setuid programs (sudo) still work and stay
/// filtered; anyone else gets no_new_privs, which seccomp then requires. Nothing of .NET is left after the exec: the
/// signal mask and dispositions the runtime changed (SIGPIPE ignored) are put back to the defaults first. Any failure
/// ends the shim with 126 (like a shell's "cannot execute") and the reason on stderr: a command never runs unconfined
/// because the filter could not be installed.
/// </remarks>
internal static class ConfinementShim
{
    public const string Flag = "--confine";

    private const int CannotExecute = 126;
    private const int NotFound = 127;

    public static bool IsInvocation(string[] args) => args is [Flag, ..];

    /// <summary>The arguments that put the shim in front of a command (which follows them).</summary>
    public static IEnumerable<string> Prefix(string filter, string? cgroup)
    {
        yield return Environment.ProcessPath ?? throw new InvalidOperationException("the agent's own path is unknown");
        yield return Flag;
        yield return filter;
        if (cgroup is not null)
        {
            yield return "--cgroup";
            yield return cgroup;
        }

        yield return "--";
    }

    public static int Run(string[] args)
    {
        string? filter = null, cgroup = null;
        var i = 0;
        for (; i < args.Length && args[i] != "--"; i++)
        {
            switch (args[i])
            {
                case Flag when i + 1 < args.Length:
                    filter = args[++i];
                    break;
                case "--cgroup" when i + 1 < args.Length:
                    cgroup = args[++i];
                    break;
                default:
                    return Fail($"unknown argument '{args[i]}'; usage: airlock-guest --confine FILTER [--cgroup DIR] -- COMMAND [ARGS...]", 2);
            }
        }

        if (filter is null || i + 1 >= args.Length)
        {
            return Fail("usage: airlock-guest --confine FILTER [--cgroup DIR] -- COMMAND [ARGS...]", 2);
        }

        try
        {
            if (cgroup is not null)
            {
                JoinCommandCgroup(cgroup);
            }

            Install(File.ReadAllBytes(filter));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            return Fail($"cannot confine the command: {e.Message}", CannotExecute);
        }

        ResetSignals();
        var errno = Exec(args.AsSpan(i + 1));
        return Fail($"{args[i + 1]}: {Marshal.GetPInvokeErrorMessage(errno)}", errno == 2 ? NotFound : CannotExecute);
    }

    /// <summary>
    /// Joins a leaf of its own below the command cgroup (its caps are the parent's). The leaf's memory.oom.group makes
    /// the OOM killer end the whole command when it picks one of its processes: a memory-holding fork bomb dies at its
    /// first OOM instead of thrashing at the cap, and the user's other commands live on. Empty leaves are removed by
    /// the agent (<see cref="PruneLeaves"/>).
    /// </summary>
    private static void JoinCommandCgroup(string cgroup)
    {
        var leaf = Path.Combine(cgroup, LeafPrefix + Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Directory.CreateDirectory(leaf);
        try
        {
            File.WriteAllText(Path.Combine(leaf, "memory.oom.group"), "1");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // No memory controller in the leaf: the command is still capped by the parent, one process at a time.
        }

        // "0" moves the writer itself; the pids limit is enforced on fork, not on joining.
        File.WriteAllText(Path.Combine(leaf, "cgroup.procs"), "0");
    }

    private const string LeafPrefix = "c";

    /// <summary>Removes the command cgroup's empty leaves (rmdir refuses one that still has processes).</summary>
    public static void PruneLeaves(string cgroup)
    {
        try
        {
            foreach (var leaf in Directory.EnumerateDirectories(cgroup, LeafPrefix + "*"))
            {
                NativeMethods.rmdir(leaf);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Pruned next time.
        }
    }

    /// <summary>Installs a classic-BPF seccomp filter on the calling thread (which is the one that execs).</summary>
    internal static unsafe void Install(byte[] bpf)
    {
        if (bpf.Length == 0 || bpf.Length % 8 != 0 || bpf.Length / 8 > ushort.MaxValue)
        {
            throw new InvalidOperationException($"the seccomp filter is {bpf.Length} bytes, not a whole number of BPF instructions");
        }

        fixed (byte* code = bpf)
        {
            var program = new NativeMethods.SockFprog { Length = (ushort)(bpf.Length / 8), Filter = code };
            if (NativeMethods.seccomp(NativeMethods.SysSeccomp, NativeMethods.SeccompSetModeFilter, 0, &program) == 0)
            {
                return;
            }

            // EACCES: no CAP_SYS_ADMIN here, and the kernel wants no_new_privs first.
            var errno = Marshal.GetLastPInvokeError();
            if (errno == 13 && NativeMethods.prctl(NativeMethods.PrSetNoNewPrivs, 1, 0, 0, 0) == 0
                && NativeMethods.seccomp(NativeMethods.SysSeccomp, NativeMethods.SeccompSetModeFilter, 0, &program) == 0)
            {
                return;
            }

            throw new InvalidOperationException($"seccomp refused the filter: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        }
    }

    private static unsafe void ResetSignals()
    {
        var empty = stackalloc byte[128];
        new Span<byte>(empty, 128).Clear();
        NativeMethods.sigprocmask(2 /* SIG_SETMASK */, empty, null);
        for (var signal = 1; signal < 65; signal++)
        {
            if (signal is not (9 or 19 or 32 or 33))
            {
                NativeMethods.signal(signal, 0);
            }
        }
    }

    /// <summary>execvp with the process's environment; returns the errno when it fails.</summary>
    private static unsafe int Exec(ReadOnlySpan<string> command)
    {
        var argv = new byte*[command.Length + 1];
        for (var i = 0; i < command.Length; i++)
        {
            argv[i] = (byte*)Marshal.StringToCoTaskMemUTF8(command[i]);
        }

        fixed (byte** pointers = argv)
        {
            NativeMethods.execvp(pointers[0], pointers);
        }

        return Marshal.GetLastPInvokeError();
    }

    private static int Fail(string message, int code)
    {
        Console.Error.WriteLine("airlock-guest: " + message);
        return code;
    }
}
