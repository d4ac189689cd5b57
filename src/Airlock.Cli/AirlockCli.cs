using System.CommandLine;
using System.Runtime.CompilerServices;
using Airlock.Sdk;

[assembly: InternalsVisibleTo("Airlock.Sdk.Tests")]

namespace Airlock.Cli;

/// <summary>The <c>airlock</c> command tree. Exit codes: 0 ok, 1 error, 2 usage error; <c>sandbox exec/run</c> pass the command's own code through.</summary>
internal static class AirlockCli
{
    public const int ExitOk = 0;
    public const int ExitError = 1;
    public const int ExitUsage = 2;
    public const int ExitCancelled = 130;

    public static async Task<int> RunAsync(string[] args, CliConsole console, CancellationToken cancellationToken)
    {
        var root = Build(console);
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var message in parse.Errors.Select(e => e.Message).Distinct(StringComparer.Ordinal))
            {
                console.WriteError(message);
            }

            await console.Error.WriteLineAsync("Run 'airlock --help' (or '<command> --help') for usage.");
            return ExitUsage;
        }

        try
        {
            // Signals are handled by Program (cancelling cancellationToken) so that `serve` can take as long as it
            // needs to stop sandboxes; System.CommandLine's own handler would force an exit after 2 s.
            var invocation = new InvocationConfiguration
            {
                Output = console.Out,
                Error = console.Error,
                EnableDefaultExceptionHandler = false,
                ProcessTerminationTimeout = null,
            };
            return await parse.InvokeAsync(invocation, cancellationToken);
        }
        catch (Exception e)
        {
            console.WriteError(MessageOf(e));
            return ExitError;
        }
    }

    public static RootCommand Build(CliConsole console)
    {
        var globals = new GlobalOptions();
        var root = new RootCommand("Airlock: an execution boundary for AI agents.")
        {
            globals.Url,
            globals.ApiKey,
            ServerCommands.Serve(console),
            ServerCommands.Doctor(console),
            SandboxCommands.Build(console, globals),
            AuditCommands.Build(console),
            UsageCommands.Build(console, globals),
            TenantCommands.Build(console, globals),
            KeyCommands.Build(console, globals),
        };
        return root;
    }

    /// <summary>A command that takes one id, calls the server with it and says what it did on stderr (kill, revoke, rm).</summary>
    public static Command OnId(CliConsole console, GlobalOptions globals, string name, string description, string idDescription,
        Func<AirlockClient, string, CancellationToken, Task> call, string done)
    {
        var id = new Argument<string>("id") { Description = idDescription };
        var command = new Command(name, description) { id };
        command.SetAction(Guard(console, async (parse, cancellationToken) =>
        {
            using var client = globals.CreateClient(parse, console);
            var value = parse.GetValue(id)!;
            await call(client, value, cancellationToken);
            await console.Error.WriteLineAsync($"{done} {value}");
            return ExitOk;
        }));
        return command;
    }

    /// <summary>Wraps an action so expected failures print <c>error: ...</c> and map to exit codes.</summary>
    public static Func<ParseResult, CancellationToken, Task<int>> Guard(CliConsole console, Func<ParseResult, CancellationToken, Task<int>> action) =>
        async (parse, cancellationToken) =>
        {
            try
            {
                return await action(parse, cancellationToken);
            }
            catch (CliUsageException e)
            {
                console.WriteError(e.Message);
                return ExitUsage;
            }
            catch (AirlockApiException e)
            {
                console.WriteError(e.Message);
                return ExitError;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                console.WriteError("cancelled");
                return ExitCancelled;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or InvalidOperationException or NotSupportedException)
            {
                console.WriteError(MessageOf(e));
                return ExitError;
            }
        };

    /// <summary>An exception's message without the "(Parameter 'x')" suffix meant for developers.</summary>
    public static string MessageOf(Exception e) =>
        e is ArgumentException { ParamName: { } name } a ? a.Message.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal) : e.Message;

    /// <summary>The data directory: the flag, else <c>AIRLOCK_DATA_DIR</c>, else <c>/var/lib/airlock</c>.</summary>
    public static string DataDir(CliConsole console, string? flag) =>
        !string.IsNullOrWhiteSpace(flag) ? flag
        : console.Environment("AIRLOCK_DATA_DIR") is { Length: > 0 } env ? env
        : AirlockClientOptions.DefaultDataDir;
}

/// <summary>Options every command accepts.</summary>
internal sealed class GlobalOptions
{
    public Option<string?> Url { get; } = new("--url")
    {
        Description = "airlockd base URL (default: $AIRLOCK_URL, else http://127.0.0.1:8686)",
        Recursive = true,
    };

    public Option<string?> ApiKey { get; } = new("--api-key")
    {
        Description = "API key (default: $AIRLOCK_API_KEY, $E2B_API_KEY, else <data-dir>/bootstrap-key)",
        Recursive = true,
    };

    public AirlockClient CreateClient(ParseResult parse, CliConsole console)
    {
        AirlockClientOptions options;
        try
        {
            options = AirlockClientOptions.FromEnvironment(parse.GetValue(Url), parse.GetValue(ApiKey), dataDir: null, console.Environment);
        }
        catch (ArgumentException e)
        {
            throw new CliUsageException(AirlockCli.MessageOf(e));
        }

        return new AirlockClient(options);
    }
}
