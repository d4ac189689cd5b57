using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Airlock.Sandboxes;

namespace Airlock.Boundaries;

/// <summary>
/// Starts the processes that run sandboxes (the bwrap, runc and qemu launch chains) from one long-lived thread, tied to
/// airlockd's life from their first instruction unless the sandbox is to outlive airlockd (keep on shutdown).
/// </summary>
/// <remarks>
/// <para>
/// Why one thread: PR_SET_PDEATHSIG fires when the <em>thread</em> that forked the child exits; .NET retires idle
/// thread-pool threads, so sandboxes started from a pool thread would die at random. This thread lives as long as airlockd.
/// </para>
/// <para>
/// Why the tether: a launch chain used to set its parent-death signal only at its end (bwrap --die-with-parent, tini -p,
/// setpriv --pdeathsig next to qemu). airlockd killed before that point orphaned the chain instead of killing it: the
/// kernel reparented it to init, and the later prctl then tied it to init, so the sandbox ran on, unowned, until the next
/// airlockd's reconcile (issue 12, finding 3). So every tethered chain now starts as
/// <code>
/// fork ─ exec setpriv --pdeathsig KILL ─ exec sh: [ $PPID = airlockd ] || exit 125 ─ exec the launch chain
/// </code>
/// The signal is set by the first program the child runs; a death of airlockd before that prctl is caught by the parent
/// check right after it (the orphan's parent is no longer airlockd), so there is no window. The signal survives exec of
/// programs that are not setuid, and the kernel clears it at every credential change (commit_creds): a driver that
/// drops to the sandbox's uid sets it again after the change (setpriv --reuid … --pdeathsig, which applies it after the
/// ids), and bwrap and tini set their own for the processes they fork.
/// </para>
/// </remarks>
internal static class DedicatedSpawner
{
    /// <summary>The tether's exit code when airlockd was already gone before the chain could tie itself to it.</summary>
    public const int ParentGoneExitCode = 125;

    private const string TetherScript = """[ "$PPID" = "$1" ] || exit 125; shift; exec "$@" """;
    private static readonly BlockingCollection<(ProcessStartInfo Start, TaskCompletionSource<System.Diagnostics.Process> Done)> Queue = new();

    static DedicatedSpawner()
    {
        var thread = new Thread(Run) { IsBackground = true, Name = "airlock-spawner" };
        thread.Start();
    }

    /// <summary>Starts <paramref name="start"/>; tethered, it is SIGKILLed by the kernel when airlockd dies, from its first instruction on.</summary>
    public static Task<System.Diagnostics.Process> StartAsync(ProcessStartInfo start, bool tethered)
    {
        SlowLaunchForFailpoint(start);
        if (tethered)
        {
            Tether(start);
        }

        var done = new TaskCompletionSource<System.Diagnostics.Process>(TaskCreationOptions.RunContinuationsAsynchronously);
        Queue.Add((start, done));
        return done.Task;
    }

    /// <summary>Wraps the command so that its first program sets the parent-death signal and its second checks the parent.</summary>
    internal static void Tether(ProcessStartInfo start)
    {
        string[] chain = [start.FileName, .. start.ArgumentList];
        start.FileName = "setpriv";
        start.ArgumentList.Clear();
        foreach (var arg in (string[])["--pdeathsig=KILL", "--", "/bin/sh", "-c", TetherScript, "airlock-tether", Environment.ProcessId.ToString(CultureInfo.InvariantCulture), .. chain])
        {
            start.ArgumentList.Add(arg);
        }
    }

    private static void Run()
    {
        foreach (var (start, done) in Queue.GetConsumingEnumerable())
        {
            try
            {
                var process = System.Diagnostics.Process.Start(start) ?? throw new InvalidOperationException($"{start.FileName} did not start");
                Failpoints.Hit(Failpoints.SpawnAfterStart);
                done.SetResult(process);
            }
            catch (Exception e)
            {
                done.SetException(e);
            }
        }
    }

    /// <summary>
    /// With the spawn failpoint armed (tests only), the launch chain sleeps 300 ms before it starts, as a slow host makes
    /// it (a cgroup v1 attach waits for RCU grace periods): airlockd dies before the chain reaches its sandbox runtime.
    /// </summary>
    private static void SlowLaunchForFailpoint(ProcessStartInfo start)
    {
        if (!Failpoints.IsArmed(Failpoints.SpawnAfterStart))
        {
            return;
        }

        string[] chain = [start.FileName, .. start.ArgumentList];
        start.FileName = "/bin/sh";
        start.ArgumentList.Clear();
        foreach (var arg in (string[])["-c", """sleep 0.3; exec "$@" """, "airlock-slow-launch", .. chain])
        {
            start.ArgumentList.Add(arg);
        }
    }
}
