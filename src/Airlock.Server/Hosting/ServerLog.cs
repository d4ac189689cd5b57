using Microsoft.Extensions.Logging;

namespace Airlock.Server;

internal static partial class ServerLog
{
    [LoggerMessage(6, LogLevel.Warning, "Bootstrap API key written to {Path}")]
    public static partial void BootstrapKey(ILogger logger, string path);

    [LoggerMessage(7, LogLevel.Error, "Unexpected error in {Operation}")]
    public static partial void Unexpected(ILogger logger, Exception exception, string operation);
}
