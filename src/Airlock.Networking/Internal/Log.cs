using Microsoft.Extensions.Logging;

namespace Airlock.Networking.Internal;

internal static partial class Log
{
    [LoggerMessage(1, LogLevel.Information, "Created network {Namespace}: {HostInterface} {HostAddress} <-> {SandboxAddress} (index {Index})")]
    public static partial void Created(ILogger logger, string @namespace, string hostInterface, string hostAddress, string sandboxAddress, int index);

    [LoggerMessage(2, LogLevel.Warning, "Creating network {Namespace} failed; rolling back")]
    public static partial void CreateFailed(ILogger logger, string @namespace, Exception exception);

    [LoggerMessage(3, LogLevel.Information, "Deleted network {Namespace}")]
    public static partial void Deleted(ILogger logger, string @namespace);

    [LoggerMessage(4, LogLevel.Warning, "Cleanup step for {Namespace} failed: {Step}")]
    public static partial void CleanupStepFailed(ILogger logger, string @namespace, string step, Exception exception);

    [LoggerMessage(5, LogLevel.Debug, "Found partial network for {SandboxId} before create; removing it first")]
    public static partial void RemovingPartial(ILogger logger, string sandboxId);
}
