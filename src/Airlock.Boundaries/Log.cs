using Microsoft.Extensions.Logging;

namespace Airlock.Boundaries;

/// <summary>The drivers' log messages, where the risk is: launches, stops, mounts, cgroups, pause and resume, QMP.</summary>
internal static partial class Log
{
    [LoggerMessage(1, LogLevel.Information, "Launching {Boundary} sandbox {SandboxId} ({How})")]
    public static partial void Launching(ILogger logger, string boundary, string sandboxId, string how);

    [LoggerMessage(2, LogLevel.Information, "Launched {Boundary} sandbox {SandboxId}: entry pid {Pid}")]
    public static partial void Launched(ILogger logger, string boundary, string sandboxId, int pid);

    [LoggerMessage(3, LogLevel.Warning, "Launching {Boundary} sandbox {SandboxId} failed; cleaning up")]
    public static partial void LaunchFailed(ILogger logger, string boundary, string sandboxId, Exception exception);

    [LoggerMessage(4, LogLevel.Information, "Stopping {Boundary} sandbox {SandboxId} ({Why}, graceful: {Graceful})")]
    public static partial void Stopping(ILogger logger, string sandboxId, string boundary, string why, bool graceful);

    [LoggerMessage(5, LogLevel.Information, "Stopped sandbox {SandboxId} ({Why}) in {ElapsedMs} ms")]
    public static partial void Stopped(ILogger logger, string sandboxId, string why, long elapsedMs);

    [LoggerMessage(6, LogLevel.Error, "Stopping sandbox {SandboxId} ({Why}) failed")]
    public static partial void StopFailed(ILogger logger, string sandboxId, string why, Exception exception);

    [LoggerMessage(7, LogLevel.Information, "Detached from sandbox {SandboxId} (pid {Pid} keeps running)")]
    public static partial void Detached(ILogger logger, string sandboxId, int pid);

    [LoggerMessage(8, LogLevel.Warning, "Sandbox {SandboxId} ended on its own: {Reason}")]
    public static partial void EntryExited(ILogger logger, string sandboxId, string reason);

    [LoggerMessage(9, LogLevel.Debug, "Mounted the writable layer of {StateDir}")]
    public static partial void Mounted(ILogger logger, string stateDir);

    [LoggerMessage(10, LogLevel.Debug, "Unmounted {Count} mount(s) of {StateDir}")]
    public static partial void Unmounted(ILogger logger, string stateDir, int count);

    [LoggerMessage(11, LogLevel.Debug, "Created cgroup airlock/{SandboxId} ({Mode}): memory {MemoryMiB} MiB, pids {Pids}, cpu {CpuMillis} millicores")]
    public static partial void CgroupCreated(ILogger logger, string sandboxId, string mode, int memoryMiB, int pids, int cpuMillis);

    [LoggerMessage(12, LogLevel.Information, "Removed cgroup airlock/{SandboxId}: {Actions}")]
    public static partial void CgroupDestroyed(ILogger logger, string sandboxId, string actions);

    [LoggerMessage(13, LogLevel.Information, "Paused sandbox {SandboxId}: {What}")]
    public static partial void Paused(ILogger logger, string sandboxId, string what);

    [LoggerMessage(14, LogLevel.Information, "Resuming sandbox {SandboxId}: {How}")]
    public static partial void Resuming(ILogger logger, string sandboxId, string how);

    [LoggerMessage(15, LogLevel.Warning, "Pausing sandbox {SandboxId} failed; it keeps running")]
    public static partial void PauseFailed(ILogger logger, string sandboxId, Exception exception);

    [LoggerMessage(16, LogLevel.Debug, "QMP {Command} for sandbox {SandboxId} failed: {Error}")]
    public static partial void QmpFailed(ILogger logger, string sandboxId, string command, string error);

    [LoggerMessage(17, LogLevel.Warning, "The guest of sandbox {SandboxId} did not flush its files before the pause ({Error}); its disk keeps what it had written")]
    public static partial void GuestSyncFailed(ILogger logger, string sandboxId, string error);
}
