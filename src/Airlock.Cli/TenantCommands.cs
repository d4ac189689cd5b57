using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Airlock.Core.Api;
using Spectre.Console;

namespace Airlock.Cli;

/// <summary><c>airlock tenant create|ls|rm</c> (admin key).</summary>
internal static class TenantCommands
{
    public static Command Build(CliConsole console, GlobalOptions globals) =>
        new("tenant", "Create, list and delete tenants (needs an admin key)")
        {
            Create(console, globals),
            List(console, globals),
            Remove(console, globals),
        };

    private static Command Create(CliConsole console, GlobalOptions globals)
    {
        var name = new Argument<string>("name") { Description = "Tenant name" };
        var maxSandboxes = new Option<int?>("--max-sandboxes") { Description = "Sandboxes at once (default: the server's per-tenant limit)" };
        var maxMemory = new Option<int?>("--max-memory-mb") { Description = "Memory all its sandboxes may reserve, MiB" };
        var maxVCpus = new Option<int?>("--max-vcpus") { Description = "vCPUs all its sandboxes may reserve" };
        var json = new Option<bool>("--json") { Description = "Print the API response as JSON" };
        var command = new Command("create", "Create a tenant") { name, maxSandboxes, maxMemory, maxVCpus, json };
        command.SetAction(AirlockCli.Guard(console, async (parse, cancellationToken) =>
        {
            using var client = globals.CreateClient(parse, console);
            var quotas = new QuotaSettings { MaxSandboxes = parse.GetValue(maxSandboxes), MaxMemoryMB = parse.GetValue(maxMemory), MaxVCpus = parse.GetValue(maxVCpus) };
            var tenant = await client.CreateTenantAsync(parse.GetValue(name)!, quotas, cancellationToken);
            if (parse.GetValue(json))
            {
                await console.Out.WriteLineAsync(JsonSerializer.Serialize(tenant, CliJsonContext.Default.TenantInfo));
            }
            else
            {
                await console.Out.WriteLineAsync(tenant.TenantId);
            }

            return AirlockCli.ExitOk;
        }));
        return command;
    }

    private static Command List(CliConsole console, GlobalOptions globals)
    {
        var json = new Option<bool>("--json") { Description = "Print the API response as JSON" };
        var command = new Command("ls", "List tenants with the quotas that apply to them") { json };
        command.SetAction(AirlockCli.Guard(console, async (parse, cancellationToken) =>
        {
            using var client = globals.CreateClient(parse, console);
            var tenants = await client.ListTenantsAsync(cancellationToken);
            if (parse.GetValue(json))
            {
                await console.Out.WriteLineAsync(JsonSerializer.Serialize(tenants.ToList(), CliJsonContext.Default.ListTenantInfo));
                return AirlockCli.ExitOk;
            }

            var table = new Table().AddColumns("Tenant", "Name", "Created", "Sandboxes", "Memory MiB", "vCPUs");
            foreach (var t in tenants)
            {
                var q = t.EffectiveQuotas;
                table.AddRow(Markup.Escape(t.TenantId), Markup.Escape(t.Name), t.CreatedAt.ToString("u", CultureInfo.InvariantCulture),
                    Text(q.MaxSandboxes), Text(q.MaxMemoryMB), Text(q.MaxVCpus));
            }

            console.Ui.Write(table);
            return AirlockCli.ExitOk;
        }));
        return command;
    }

    private static Command Remove(CliConsole console, GlobalOptions globals) =>
        AirlockCli.OnId(console, globals, "rm", "Delete a tenant and revoke its keys (refused while it has sandboxes running or paused)", "Tenant id",
            (client, id, ct) => client.DeleteTenantAsync(id, ct), "deleted");

    private static string Text(int? value) => value?.ToString(CultureInfo.InvariantCulture) ?? "-";
}
