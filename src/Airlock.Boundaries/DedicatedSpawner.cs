using System.Collections.Concurrent;
using System.Diagnostics;
using Airlock.Sandboxes;

namespace Airlock.Boundaries;

/// <summary>
/// Starts child processes from one long-lived thread. bwrap's --die-with-parent uses PR_SET_PDEATHSIG, which fires
/// when the thread that forked the child exits; .NET retires idle thread-pool threads, so sandboxes started from a
/// pool thread would die at random. This thread lives as long as airlockd.
/// </summary>
internal static class DedicatedSpawner
{
    private static readonly BlockingCollection<(ProcessStartInfo Start, TaskCompletionSource<System.Diagnostics.Process> Done)> Queue = new();

    static DedicatedSpawner()
    {
        var thread = new Thread(Run) { IsBackground = true, Name = "airlock-spawner" };
        thread.Start();
    }

    public static Task<System.Diagnostics.Process> StartAsync(ProcessStartInfo start)
    {
        var done = new TaskCompletionSource<System.Diagnostics.Process>(TaskCreationOptions.RunContinuationsAsynchronously);
        Queue.Add((start, done));
        return done.Task;
    }

    private static void Run()
    {
        foreach (var (start, done) in Queue.GetConsumingEnumerable())
        {
            try
            {
                SlowLaunchForFailpoint(start);
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
    /// With the spawn failpoint armed (tests only), the launch chain first sleeps 300 ms, as a slow host would make it
    /// (cgroup v1 attach waits for RCU grace periods): airlockd dies before the chain reaches its sandbox runtime, every time.
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
