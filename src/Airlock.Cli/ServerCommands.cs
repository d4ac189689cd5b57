using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Airlock.Core.Sandboxes;
using Airlock.Server;
using Spectre.Console;

namespace Airlock.Cli;

/// <summary><c>airlock serve</c> and <c>airlock doctor</c>: airlockd in this process.</summary>
internal static class ServerCommands
{
    public static Command Serve(CliConsole console)
    {
        var defaults = new AirlockServerOptions();
        var listen = new Option<string>("--listen") { Description = "Address to listen on", DefaultValueFactory = _ => defaults.Listen };
        var dataDir = new Option<string?>("--data-dir") { Description = "State directory (default: $AIRLOCK_DATA_DIR, else /var/lib/airlock)" };
        var domain = new Option<string>("--domain") { Description = "Domain in sandbox URLs (<port>-<id>.<domain>)", DefaultValueFactory = _ => defaults.Domain };
        var keep = new Option<bool>("--keep-sandboxes") { Description = "Leave sandboxes running when airlockd stops; the next start re-adopts them" };
        var risk = new Option<string>("--default-risk") { Description = "Risk class for requests that name neither risk nor boundary (E2B SDKs cannot)", DefaultValueFactory = _ => RiskName(defaults.DefaultRisk) };
        risk.AcceptOnlyFromAmong("low", "medium", "high");
        var timeout = new Option<int>("--default-timeout") { Description = "Sandbox lifetime in seconds when a request names none", DefaultValueFactory = _ => defaults.DefaultTimeoutSeconds };
        timeout.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<int>() <= 0)
            {
                r.AddError("--default-timeout must be a positive number of seconds.");
            }
        });
        var guest = new Option<string?>("--guest-agent") { Description = "Path of the airlock-guest binary (default: found next to airlockd or in artifacts/guest)" };
        var templates = new Option<string?>("--templates-dir") { Description = "Templates directory (default: $AIRLOCK_TEMPLATES_DIR, else <data-dir>/templates)" };
        var runtime = new Option<string>("--container-runtime") { Description = "OCI runtime of the container boundary: auto (crun where this host allows it, else runc), runc or crun", DefaultValueFactory = _ => defaults.ContainerRuntime };
        runtime.AcceptOnlyFromAmong("auto", "runc", "crun");
        var disable = new Option<string[]>("--disable-boundary") { Description = "Turn a boundary off on this node (repeatable): process, container or microvm", AllowMultipleArgumentsPerToken = false };
        disable.AcceptOnlyFromAmong("process", "container", "microvm");

        var logLevel = new Option<string>("--log-level") { Description = "Least level of airlockd's own log: trace, debug, information, warning, error or critical", DefaultValueFactory = _ => LevelName(defaults.LogLevel) };
        logLevel.AcceptOnlyFromAmong(Levels);
        var requestLogLevel = new Option<string>("--request-log-level")
        {
            Description = "Least level of request lines: information logs every request; warning (default) only 4xx and slow ones; error only 5xx; none turns them off",
            DefaultValueFactory = _ => LevelName(defaults.RequestLogLevel),
        };
        requestLogLevel.AcceptOnlyFromAmong([.. Levels, "none"]);
        var logFormat = new Option<string>("--log-format") { Description = "Log lines on stdout: text, json (one object per line, for collectors) or systemd (journald priorities)", DefaultValueFactory = _ => defaults.LogFormat };
        logFormat.AcceptOnlyFromAmong("text", "json", "systemd");
        var transfers = new Option<int>("--max-file-transfers") { Description = "File transfers (GET/POST /files) one sandbox may have in flight; more get 429", DefaultValueFactory = _ => defaults.MaxFileTransfersPerSandbox };
        var health = new Option<int>("--health-interval") { Description = "Seconds between health checks of each sandbox's agent (0: off); 3 misses in a row mark it unresponsive", DefaultValueFactory = _ => (int)defaults.HealthInterval.TotalSeconds };
        foreach (var (option, min) in new[] { (transfers, 1), (health, 0) })
        {
            option.Validators.Add(r =>
            {
                if (r.GetValueOrDefault<int>() < min)
                {
                    r.AddError($"{option.Name} must be at least {min}.");
                }
            });
        }

        var command = new Command("serve", "Run airlockd (the control API and envd routes) in the foreground")
        {
            listen, dataDir, domain, keep, risk, timeout, guest, templates, runtime, disable, logLevel, requestLogLevel, logFormat, transfers, health,
        };
        command.SetAction(AirlockCli.Guard(console, async (parse, cancellationToken) =>
        {
            _ = BoundaryMapping.TryParseRisk(parse.GetValue(risk), out var defaultRisk);
            var options = defaults with
            {
                Listen = parse.GetValue(listen)!,
                DataDir = AirlockCli.DataDir(console, parse.GetValue(dataDir)),
                Domain = parse.GetValue(domain)!,
                KeepSandboxesOnShutdown = parse.GetValue(keep),
                DefaultRisk = defaultRisk,
                DefaultTimeoutSeconds = parse.GetValue(timeout),
                GuestAgentPath = parse.GetValue(guest),
                TemplatesDir = parse.GetValue(templates) ?? console.Environment("AIRLOCK_TEMPLATES_DIR"),
                ContainerRuntime = parse.GetValue(runtime)!,
                DisabledBoundaries = (parse.GetValue(disable) ?? []).Select(name => name switch
                {
                    "process" => BoundaryKind.Process,
                    "container" => BoundaryKind.Container,
                    _ => BoundaryKind.MicroVm,
                }).ToHashSet(),
                LogLevel = ParseLevel(parse.GetValue(logLevel)),
                RequestLogLevel = ParseLevel(parse.GetValue(requestLogLevel)),
                LogFormat = parse.GetValue(logFormat)!,
                MaxFileTransfersPerSandbox = parse.GetValue(transfers),
                HealthInterval = TimeSpan.FromSeconds(parse.GetValue(health)),
            };
            console.ErrorUi.MarkupLine(CultureInfo.InvariantCulture, "starting airlockd on [bold]{0}[/] (data {1}, default risk {2}); Ctrl+C stops it",
                Markup.Escape(options.Listen), Markup.Escape(options.DataDir), RiskName(options.DefaultRisk));
            return await AirlockServer.RunAsync(options, key => PrintBootstrapKey(console, options.DataDir, key), cancellationToken);
        }));
        return command;
    }

    public static Command Doctor(CliConsole console)
    {
        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var dataDir = new Option<string?>("--data-dir") { Description = "State directory (default: $AIRLOCK_DATA_DIR, else /var/lib/airlock)" };
        var templates = new Option<string?>("--templates-dir") { Description = "Templates directory (default: $AIRLOCK_TEMPLATES_DIR)" };
        var command = new Command("doctor", "Show which boundaries this host can offer, and what is missing for the others") { json, dataDir, templates };
        command.SetAction(AirlockCli.Guard(console, async (parse, cancellationToken) =>
        {
            var options = new AirlockServerOptions
            {
                DataDir = AirlockCli.DataDir(console, parse.GetValue(dataDir)),
                TemplatesDir = parse.GetValue(templates) ?? console.Environment("AIRLOCK_TEMPLATES_DIR"),
            };
            var results = await AirlockServer.DoctorAsync(options, cancellationToken);
            if (parse.GetValue(json))
            {
                await console.Out.WriteLineAsync(JsonSerializer.Serialize(results.ToList(), CliJsonContext.Default.ListDriverAvailability));
                return AirlockCli.ExitOk;
            }

            var table = new Table().AddColumns("Boundary", "Driver", "Available", "Detail / missing");
            foreach (var r in results)
            {
                var detail = r.Missing.Count == 0 ? r.Detail : r.Detail + "\nmissing: " + string.Join(", ", r.Missing);
                table.AddRow(
                    new Text(r.Boundary.Name()),
                    new Text(r.Driver),
                    new Markup(r.Available ? "[green]yes[/]" : "[red]no[/]"),
                    new Text(detail));
            }

            console.Ui.Write(table);
            return AirlockCli.ExitOk;
        }));
        return command;
    }

    /// <summary>
    /// The bootstrap key goes to a person at a terminal only: stdout is airlockd's log stream (journald, a collector),
    /// where a key would outlive its purpose. Elsewhere only the path of the owner-only file that holds it is named.
    /// </summary>
    private static void PrintBootstrapKey(CliConsole console, string dataDir, string key)
    {
        var path = Markup.Escape(Path.Combine(dataDir, "bootstrap-key"));
        if (Console.IsErrorRedirected)
        {
            console.ErrorUi.MarkupLine(CultureInfo.InvariantCulture, "Bootstrap API key written to {0} (readable by its owner only); the CLI picks it up from there.", path);
            return;
        }

        console.ErrorUi.MarkupLine("[yellow]Bootstrap API key (shown once):[/]");
        console.Error.WriteLine(key);
        console.ErrorUi.MarkupLine(CultureInfo.InvariantCulture, "It is also in {0} (readable by its owner only); the CLI picks it up from there.", path);
    }

    private static readonly string[] Levels = ["trace", "debug", "information", "warning", "error", "critical"];

    private static string LevelName(Microsoft.Extensions.Logging.LogLevel level) =>
        level == Microsoft.Extensions.Logging.LogLevel.None ? "none" : Levels[(int)level];

    private static Microsoft.Extensions.Logging.LogLevel ParseLevel(string? name) =>
        name == "none" ? Microsoft.Extensions.Logging.LogLevel.None : (Microsoft.Extensions.Logging.LogLevel)Math.Max(0, Array.IndexOf(Levels, name));

    private static string RiskName(Risk risk) => risk switch
    {
        Risk.Low => "low",
        Risk.Medium => "medium",
        _ => "high",
    };
}
