using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Airlock.Core.Api;
using Spectre.Console;

namespace Airlock.Cli;

/// <summary><c>airlock key create|ls|revoke|rotate</c>. A secret is printed once, by create and rotate, and never again.</summary>
internal static class KeyCommands
{
    public static Command Build(CliConsole console, GlobalOptions globals) =>
        new("key", "Create, list, revoke and rotate API keys")
        {
            Create(console, globals),
            List(console, globals),
            Revoke(console, globals),
            Rotate(console, globals),
        };

    private static Command Create(CliConsole console, GlobalOptions globals)
    {
        var name = new Argument<string>("name") { Description = "What the key is for" };
        var tenant = new Option<string?>("--tenant") { Description = "Tenant id (default: the caller's own)" };
        var scope = new Option<string>("--scope") { Description = "admin, tenant or read-only", DefaultValueFactory = _ => "tenant" };
        scope.AcceptOnlyFromAmong("admin", "tenant", "read-only");
        var ttl = new Option<long?>("--ttl") { Description = "Seconds until the key expires" };
        var expiresAt = new Option<DateTimeOffset?>("--expires-at") { Description = "When the key expires (ISO 8601)" };
        var json = new Option<bool>("--json") { Description = "Print the API response (with the secret) as JSON" };
        var command = new Command("create", "Create an API key and print its secret once") { name, tenant, scope, ttl, expiresAt, json };
        command.SetAction(AirlockCli.Guard(console, async (parse, cancellationToken) =>
        {
            if (parse.GetValue(ttl) is not null && parse.GetValue(expiresAt) is not null)
            {
                throw new CliUsageException("give --ttl or --expires-at, not both");
            }

            using var client = globals.CreateClient(parse, console);
            var issued = await client.CreateApiKeyAsync(new NewApiKeyRequest
            {
                Name = parse.GetValue(name),
                TenantId = parse.GetValue(tenant),
                Scope = parse.GetValue(scope),
                Ttl = parse.GetValue(ttl),
                ExpiresAt = parse.GetValue(expiresAt),
            }, cancellationToken);
            await PrintIssuedAsync(console, issued, parse.GetValue(json));
            return AirlockCli.ExitOk;
        }));
        return command;
    }

    private static Command List(CliConsole console, GlobalOptions globals)
    {
        var tenant = new Option<string?>("--tenant") { Description = "Only this tenant's keys (admin key: default all)" };
        var json = new Option<bool>("--json") { Description = "Print the API response as JSON" };
        var command = new Command("ls", "List API keys (never their secrets)") { tenant, json };
        command.SetAction(AirlockCli.Guard(console, async (parse, cancellationToken) =>
        {
            using var client = globals.CreateClient(parse, console);
            var keys = await client.ListApiKeysAsync(parse.GetValue(tenant), cancellationToken);
            if (parse.GetValue(json))
            {
                await console.Out.WriteLineAsync(JsonSerializer.Serialize(keys.ToList(), CliJsonContext.Default.ListApiKeyInfo));
                return AirlockCli.ExitOk;
            }

            var table = new Table().AddColumns("Key", "Tenant", "Name", "Scope", "Created", "Expires", "Last used", "Revoked");
            foreach (var k in keys)
            {
                table.AddRow(Markup.Escape(k.KeyId), Markup.Escape(k.TenantId), Markup.Escape(k.Name), Markup.Escape(k.Scope),
                    Time(k.CreatedAt), Time(k.ExpiresAt), Time(k.LastUsedAt), Time(k.RevokedAt));
            }

            console.Ui.Write(table);
            return AirlockCli.ExitOk;
        }));
        return command;
    }

    private static Command Revoke(CliConsole console, GlobalOptions globals) =>
        AirlockCli.OnId(console, globals, "revoke", "Revoke an API key: its next request gets 401", "Key id (from key ls)",
            (client, id, ct) => client.RevokeApiKeyAsync(id, ct), "revoked");

    private static Command Rotate(CliConsole console, GlobalOptions globals)
    {
        var id = new Argument<string>("id") { Description = "Key id (from key ls)" };
        var json = new Option<bool>("--json") { Description = "Print the API response (with the new secret) as JSON" };
        var command = new Command("rotate", "Give a key a new secret (same id, scope and tenant); the old one stops working at once") { id, json };
        command.SetAction(AirlockCli.Guard(console, async (parse, cancellationToken) =>
        {
            using var client = globals.CreateClient(parse, console);
            var issued = await client.RotateApiKeyAsync(parse.GetValue(id)!, cancellationToken);
            await PrintIssuedAsync(console, issued, parse.GetValue(json));
            return AirlockCli.ExitOk;
        }));
        return command;
    }

    /// <summary>The secret alone on stdout (scripts capture it), the key's id and a warning on stderr.</summary>
    private static async Task PrintIssuedAsync(CliConsole console, ApiKeyIssued issued, bool json)
    {
        if (json)
        {
            await console.Out.WriteLineAsync(JsonSerializer.Serialize(issued, CliJsonContext.Default.ApiKeyIssued));
            return;
        }

        await console.Out.WriteLineAsync(issued.Key);
        await console.Error.WriteLineAsync($"key {issued.ApiKey.KeyId} ({issued.ApiKey.Scope}, tenant {issued.ApiKey.TenantId}): store the secret now, it is not shown again");
    }

    private static string Time(DateTimeOffset? time) => time?.ToString("u", CultureInfo.InvariantCulture) ?? "-";
}
