using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Airlock.Audit;
using Airlock.Core.Auditing;
using Airlock.Storage;
using Spectre.Console;

namespace Airlock.Cli;

/// <summary><c>airlock audit verify|tail</c>: read the local store directly (read-only), so they work with airlockd stopped.</summary>
internal static class AuditCommands
{
    private static readonly TimeSpan FollowInterval = TimeSpan.FromSeconds(1);

    public static Command Build(CliConsole console) => new("audit", "Check and read the audit chain")
    {
        Verify(console),
        Tail(console),
    };

    private static Option<string?> DataDirOption() => new("--data-dir") { Description = "State directory (default: $AIRLOCK_DATA_DIR, else /var/lib/airlock)" };

    private static Command Verify(CliConsole console)
    {
        var dataDir = DataDirOption();
        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var command = new Command("verify", "Prove the audit chain unbroken; exit 1 and name the first broken record if not") { dataDir, json };
        command.SetAction(AirlockCli.Guard(console, async (parse, cancellationToken) =>
        {
            var dir = AirlockCli.DataDir(console, parse.GetValue(dataDir));
            var store = await OpenAsync(dir, cancellationToken);
            await using (store)
            {
                var result = await AuditVerifier.VerifyAsync(store.ReadAuditAsync(0, null, cancellationToken), cancellationToken);
                var output = new AuditVerifyOutput(result.Ok, result.Count, result.FirstBrokenSeq, result.Reason);
                if (parse.GetValue(json))
                {
                    await console.Out.WriteLineAsync(JsonSerializer.Serialize(output, CliJsonContext.Default.AuditVerifyOutput));
                }
                else if (output.Ok)
                {
                    console.Ui.MarkupLine(CultureInfo.InvariantCulture, "[green]ok[/]: {0} records, chain unbroken", output.Count);
                }
                else
                {
                    console.Ui.MarkupLine(CultureInfo.InvariantCulture, "[red]broken[/] at seq {0} ({1} records checked): {2}",
                        output.FirstBrokenSeq?.ToString(CultureInfo.InvariantCulture) ?? "?", output.Count, Markup.Escape(output.Reason ?? "no reason given"));
                }

                return output.Ok ? AirlockCli.ExitOk : AirlockCli.ExitError;
            }
        }));
        return command;
    }

    private static Command Tail(CliConsole console)
    {
        var dataDir = DataDirOption();
        var count = new Option<int>("-n", "--lines") { Description = "How many of the latest records to print", DefaultValueFactory = _ => 20 };
        count.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<int>() < 0)
            {
                r.AddError("-n must be zero or more.");
            }
        });
        var follow = new Option<bool>("--follow", "-f") { Description = "Keep printing new records as they are appended (Ctrl+C stops)" };
        var json = new Option<bool>("--json") { Description = "Print JSON lines" };
        var command = new Command("tail", "Print the latest audit records") { dataDir, count, follow, json };
        command.SetAction(AirlockCli.Guard(console, async (parse, cancellationToken) =>
        {
            var dir = AirlockCli.DataDir(console, parse.GetValue(dataDir));
            var asJson = parse.GetValue(json);
            var last = new Queue<AuditRecord>();
            var limit = parse.GetValue(count);
            long seq = 0;
            var store = await OpenAsync(dir, cancellationToken);
            await using (store)
            {
                await foreach (var record in store.ReadAuditAsync(0, null, cancellationToken))
                {
                    seq = record.Seq;
                    last.Enqueue(record);
                    if (last.Count > limit)
                    {
                        last.Dequeue();
                    }
                }

                foreach (var record in last)
                {
                    await WriteAsync(console, record, asJson);
                }

                if (!parse.GetValue(follow))
                {
                    return AirlockCli.ExitOk;
                }

                try
                {
                    while (true)
                    {
                        await Task.Delay(FollowInterval, cancellationToken);
                        await foreach (var record in store.ReadAuditAsync(seq, null, cancellationToken))
                        {
                            seq = record.Seq;
                            await WriteAsync(console, record, asJson);
                        }
                    }
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    return AirlockCli.ExitOk;
                }
            }
        }));
        return command;
    }

    private static async Task<SqliteStore> OpenAsync(string dataDir, CancellationToken cancellationToken)
    {
        if (!Directory.Exists(dataDir))
        {
            throw new IOException($"data directory {dataDir} does not exist (pass --data-dir or set AIRLOCK_DATA_DIR).");
        }

        return await SqliteStore.OpenReadOnlyAsync(dataDir, cancellationToken);
    }

    private static async Task WriteAsync(CliConsole console, AuditRecord record, bool json)
    {
        if (json)
        {
            await console.Out.WriteLineAsync(JsonSerializer.Serialize(record, CliJsonLinesContext.Default.AuditRecord));
            return;
        }

        await console.Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
            $"{record.Seq,6}  {record.Time.ToLocalTime():yyyy-MM-dd HH:mm:ss}  {record.Kind,-20} {record.SandboxId ?? "-",-20}  {record.Data}"));
    }
}
