using System.Diagnostics;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Airlock.Server;

/// <summary>
/// airlockd's log: levels per category, the stdout format, and one line per request that deserves one.
/// </summary>
/// <remarks>
/// Output is stdout only; rotation and retention belong to what collects it (journald under systemd, logrotate with
/// <c>copytruncate</c> or a collector for a redirected file). The <c>systemd</c> format prefixes each line with its syslog
/// priority (<c>&lt;6&gt;</c> information, <c>&lt;4&gt;</c> warning…) so journald files it under the right level.
/// <code>
/// category                         least level (defaults)
/// Airlock.*  (lifecycle, drivers)   LogLevel (information)
/// Airlock.Server.Requests           RequestLogLevel (warning: 4xx, slow; error: 5xx)
/// Microsoft.AspNetCore.*, Yarp.*    warning (or LogLevel when that is debug or trace)
/// Microsoft.Hosting.Lifetime        information (start and stop lines)
/// </code>
/// </remarks>
internal static partial class ServerLogging
{
    /// <summary>The category of request lines.</summary>
    public const string RequestCategory = "Airlock.Server.Requests";

    /// <summary>Set by the envd routing on requests it forwards: their duration is the sandbox's, not airlockd's.</summary>
    public const string EnvdItem = "airlock.envd";

    public static void Configure(ILoggingBuilder logging, AirlockServerOptions options)
    {
        logging.ClearProviders();
        logging.SetMinimumLevel(options.LogLevel);
        var framework = options.LogLevel <= LogLevel.Debug ? options.LogLevel : LogLevel.Warning;
        foreach (var category in new[] { "Microsoft", "System", "Yarp" })
        {
            logging.AddFilter(category, framework);
        }

        logging.AddFilter("Microsoft.Hosting.Lifetime", options.LogLevel <= LogLevel.Information ? options.LogLevel : LogLevel.Warning);
        logging.AddFilter(RequestCategory, options.RequestLogLevel);
        switch (options.LogFormat)
        {
            case "json":
                logging.AddJsonConsole(o =>
                {
                    o.UseUtcTimestamp = true;
                    o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ";
                    o.JsonWriterOptions = new System.Text.Json.JsonWriterOptions { Indented = false };
                });
                break;
            case "systemd":
                logging.AddSystemdConsole(o => o.UseUtcTimestamp = true); // journald stamps each line itself
                break;
            default:
                logging.AddSimpleConsole(o =>
                {
                    o.SingleLine = true;
                    o.UseUtcTimestamp = true;
                    o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ ";
                });
                break;
        }
    }

    /// <summary>
    /// One line per request at the level its outcome deserves (5xx error; 4xx or slow warning; else information), so
    /// the default (warning) keeps failures and drops the routine. The path is logged escaped (a %0A in it cannot start a
    /// forged line) and without its query string, which can carry signatures.
    /// </summary>
    public static async Task LogRequestsAsync(HttpContext context, Func<Task> next)
    {
        var logger = context.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger(RequestCategory);
        var started = Stopwatch.GetTimestamp();
        try
        {
            await next();
        }
        finally
        {
            var elapsed = Stopwatch.GetElapsedTime(started);
            var status = context.Response.StatusCode;
            var envd = context.Items.ContainsKey(EnvdItem);
            var slow = !envd && elapsed >= context.RequestServices.GetRequiredService<AirlockServerOptions>().SlowRequest;
            var level = status >= 500 ? LogLevel.Error : status >= 400 || slow ? LogLevel.Warning : LogLevel.Information;
            if (logger.IsEnabled(level))
            {
                Request(logger, level, context.Request.Method, context.Request.Path.ToUriComponent(), status, (long)elapsed.TotalMilliseconds,
                    envd ? "envd" : "api", context.RequestAborted.IsCancellationRequested ? " (client went away)" : "");
            }
        }
    }

    [LoggerMessage(EventId = 20, Message = "{Method} {Path} {Status} {ElapsedMs} ms {Route}{Aborted}")]
    private static partial void Request(ILogger logger, LogLevel level, string method, string path, int status, long elapsedMs, string route, string aborted);
}
