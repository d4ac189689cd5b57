using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Spectre.Console;

namespace Airlock.Cli;

/// <summary><c>airlock usage</c>: metered usage of the caller's tenant.</summary>
internal static class UsageCommands
{
    public static Command Build(CliConsole console, GlobalOptions globals)
    {
        var json = new Option<bool>("--json") { Description = "Print the API response as JSON" };
        var command = new Command("usage", "Show metered usage: reserved vCPU and memory time, CPU used, paused storage") { json };
        command.SetAction(AirlockCli.Guard(console, async (parse, cancellationToken) =>
        {
            using var client = globals.CreateClient(parse, console);
            var report = await client.UsageAsync(cancellationToken);
            if (parse.GetValue(json))
            {
                await console.Out.WriteLineAsync(JsonSerializer.Serialize(report, CliJsonContext.Default.UsageReport));
                return AirlockCli.ExitOk;
            }

            var table = new Table().AddColumns("Sandbox", "State", "Boundary", "Running s", "vCPU s", "Memory GiB·s", "CPU s", "Paused GiB·h");
            foreach (var item in report.Sandboxes.Append(new Core.Api.SandboxUsageItem { SandboxId = "total", State = "", Boundary = "", Usage = report.Total }))
            {
                var u = item.Usage;
                table.AddRow(
                    Markup.Escape(item.SandboxId), Markup.Escape(item.State), Markup.Escape(item.Boundary),
                    u.RunningSeconds.ToString("0.0", CultureInfo.InvariantCulture), u.VCpuSeconds.ToString("0.0", CultureInfo.InvariantCulture),
                    u.MemoryGiBSeconds.ToString("0.0", CultureInfo.InvariantCulture), u.CpuSeconds.ToString("0.00", CultureInfo.InvariantCulture),
                    u.PausedGiBHours.ToString("0.0000", CultureInfo.InvariantCulture));
            }

            console.Ui.Write(table);
            return AirlockCli.ExitOk;
        }));
        return command;
    }
}
