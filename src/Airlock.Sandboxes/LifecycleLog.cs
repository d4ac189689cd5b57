using Microsoft.Extensions.Logging;

namespace Airlock.Sandboxes;

internal static partial class LifecycleLog
{
    [LoggerMessage(1, LogLevel.Information, "Sandbox {SandboxId} running: {Boundary} via {Driver} in {ElapsedMs} ms")]
    public static partial void SandboxStarted(ILogger logger, string sandboxId, string boundary, string driver, long elapsedMs);

    [LoggerMessage(2, LogLevel.Warning, "Sandbox {SandboxId} failed: {Reason}")]
    public static partial void SandboxFailed(ILogger logger, string sandboxId, string reason);

    [LoggerMessage(3, LogLevel.Information, "Sandbox {SandboxId} ended: {Reason}")]
    public static partial void SandboxEnded(ILogger logger, string sandboxId, string reason);

    [LoggerMessage(4, LogLevel.Information, "Reconcile: {Action}")]
    public static partial void Reconciled(ILogger logger, string action);

    [LoggerMessage(5, LogLevel.Error, "Cleanup of sandbox {SandboxId} failed")]
    public static partial void CleanupFailed(ILogger logger, Exception exception, string sandboxId);

    [LoggerMessage(7, LogLevel.Error, "Unexpected error in {Operation}")]
    public static partial void Unexpected(ILogger logger, Exception exception, string operation);

    [LoggerMessage(8, LogLevel.Information, "Shutdown: {Count} sandboxes {Action}")]
    public static partial void Shutdown(ILogger logger, int count, string action);

    [LoggerMessage(9, LogLevel.Warning, "Boundary {Boundary} unavailable: {Detail}")]
    public static partial void BoundaryUnavailable(ILogger logger, string boundary, string detail);

    [LoggerMessage(10, LogLevel.Information, "Sandbox {SandboxId} paused ({Why}): {Kept}, {Bytes} bytes on disk, {ElapsedMs} ms")]
    public static partial void SandboxPaused(ILogger logger, string sandboxId, string why, string kept, long bytes, long elapsedMs);

    [LoggerMessage(11, LogLevel.Information, "Sandbox {SandboxId} timeout pause waits for {InFlight} envd request(s) in flight")]
    public static partial void PauseWaits(ILogger logger, string sandboxId, int inFlight);

    [LoggerMessage(12, LogLevel.Warning, "Sandbox {SandboxId} unresponsive: {Reason}")]
    public static partial void SandboxUnresponsive(ILogger logger, string sandboxId, string reason);

    [LoggerMessage(13, LogLevel.Information, "Sandbox {SandboxId} answers again: running")]
    public static partial void SandboxResponsive(ILogger logger, string sandboxId);
}
