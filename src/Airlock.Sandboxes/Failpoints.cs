namespace Airlock.Sandboxes;

/// <summary>
/// Test-only seam for the crash-consistency suite: named points in create, pause, resume and kill where airlockd kills
/// itself with SIGKILL (no shutdown, no finally, no flush), as a power cut or an OOM kill would. The name comes once from
/// the <c>AIRLOCK_FAILPOINT</c> environment variable; unset (production), <see cref="Hit"/> is one null check.
/// </summary>
/// <remarks>
/// The names are the constants below; tests/Airlock.IntegrationTests/CrashConsistencyTests.cs runs every one of them.
/// </remarks>
internal static class Failpoints
{
    /// <summary>The stored record says <c>creating</c>; nothing exists on the host yet.</summary>
    public const string CreateAfterInsert = "create.after-insert";
    /// <summary>The sandbox's network namespace, veth and lease exist; no instance.</summary>
    public const string CreateAfterNetwork = "create.after-network";
    /// <summary>
    /// A sandbox's launch chain (sh → nsenter → setpriv → bwrap | runc | qemu) was just forked and exec'd: the first
    /// instructions of a child, before it reaches the sandbox runtime (compiled into Airlock.Boundaries too).
    /// </summary>
    public const string SpawnAfterStart = "spawn.after-start";
    /// <summary>The driver has started the boundary (bwrap: just spawned; runc: init pid known; qemu: QMP up).</summary>
    public const string CreateAfterDriverStart = "create.after-driver-start";
    /// <summary>The agent answers; the store still says <c>creating</c>.</summary>
    public const string CreateBeforeRunning = "create.before-running";
    /// <summary>The store says <c>pausing</c>; the instance still runs.</summary>
    public const string PauseAfterPausing = "pause.after-pausing";
    /// <summary>The driver paused (processes stopped or memory saved); the network still exists; the store says <c>pausing</c>.</summary>
    public const string PauseAfterDriver = "pause.after-driver";
    /// <summary>The network is gone; the store still says <c>pausing</c>.</summary>
    public const string PauseBeforePaused = "pause.before-paused";
    /// <summary>The store says <c>resuming</c>, a new network exists; no instance yet.</summary>
    public const string ResumeAfterNetwork = "resume.after-network";
    /// <summary>The resumed instance runs; the store still says <c>resuming</c>.</summary>
    public const string ResumeBeforeRunning = "resume.before-running";
    /// <summary>The instance is stopped (kill, or cleanup of a failed create); its driver state and network are not yet removed.</summary>
    public const string KillAfterStop = "kill.after-stop";
    /// <summary>The instance is killed and cleaned; the store still says <c>running</c>.</summary>
    public const string KillBeforeRecord = "kill.before-record";

    /// <summary>The one armed failpoint, read once at startup (null: none, the production case).</summary>
    private static readonly string? Armed = Environment.GetEnvironmentVariable("AIRLOCK_FAILPOINT") is { Length: > 0 } name ? name : null;

    /// <summary>Whether <paramref name="name"/> is the armed failpoint (for a seam that must prepare before the step).</summary>
    public static bool IsArmed(string name) => Armed is not null && string.Equals(Armed, name, StringComparison.Ordinal);

    /// <summary>SIGKILLs this process when <paramref name="name"/> is the armed failpoint; otherwise returns at once.</summary>
    public static void Hit(string name)
    {
        if (Armed is null || !string.Equals(Armed, name, StringComparison.Ordinal))
        {
            return;
        }

        Console.Error.WriteLine($"failpoint {name}: SIGKILL");
        using var self = System.Diagnostics.Process.GetCurrentProcess();
        self.Kill(); // SIGKILL on Linux: nothing after this line runs
        Thread.Sleep(Timeout.Infinite);
    }
}
