using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Airlock.Audit;
using Airlock.Core.Auditing;
using Airlock.Core.Storage;
using Airlock.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace Airlock.IntegrationTests;

[Collection("airlockd")]
[Trait("Category", "Integration")]
public sealed class AuditTests(HostFixture fixture) : IClassFixture<HostFixture>
{
    private AirlockHost Host => fixture.Host;

    public sealed record Line(long Seq, string Kind, string? SandboxId, string Data);

    /// <summary>Reads this tenant's audit trail through the API (JSON lines).</summary>
    public static async Task<IReadOnlyList<Line>> ReadAuditAsync(AirlockHost host)
    {
        var text = await host.Http.GetStringAsync("/audit");
        var lines = new List<Line>();
        foreach (var raw in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var node = JsonNode.Parse(raw)!;
            var data = node["data"];
            lines.Add(new Line(
                node["seq"]!.GetValue<long>(),
                node["kind"]!.GetValue<string>(),
                node["sandboxId"]?.GetValue<string>(),
                data is JsonValue v && v.TryGetValue<string>(out var s) ? s : data?.ToJsonString() ?? ""));
        }

        return lines;
    }

    /// <summary>Every tenant's records and airlockd's own (reconcile), straight from the store.</summary>
    public static async Task<IReadOnlyList<Line>> ReadAllAuditAsync(AirlockHost host)
    {
        var lines = new List<Line>();
        await foreach (var r in host.Services.GetRequiredService<IStore>().ReadAuditAsync(0, null, CancellationToken.None))
        {
            lines.Add(new Line(r.Seq, r.Kind, r.SandboxId, r.Data));
        }

        return lines;
    }

    [Fact(Timeout = 180_000)]
    public async Task Every_create_command_exit_file_write_and_kill_is_in_an_unbroken_chain()
    {
        var sandbox = await Host.CreateSandboxAsync();
        var envd = Host.Envd(sandbox);
        var payload = Encoding.UTF8.GetBytes("audited bytes\n");
        await envd.WriteFileAsync("/home/user/audited.txt", new MemoryStream(payload), CancellationToken.None);
        var (exit, _, _) = await Host.RunAsync(sandbox, "cat /home/user/audited.txt; exit 4");
        Assert.Equal(4, exit);
        await Host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");

        var mine = (await ReadAuditAsync(Host)).Where(r => r.SandboxId == sandbox.SandboxId).ToList();
        Assert.Equal(
            ["sandbox.create", "sandbox.boundary", "file.write", "process.start", "process.exit", "sandbox.kill"],
            mine.Select(r => r.Kind).ToArray());
        var write = mine.Single(r => r.Kind == "file.write");
        Assert.Contains(Convert.ToHexStringLower(SHA256.HashData(payload)), write.Data);
        Assert.Contains("/home/user/audited.txt", write.Data);
        Assert.Contains("cat /home/user/audited.txt; exit 4", mine.Single(r => r.Kind == "process.start").Data);
        Assert.Contains("\"exitCode\":4", mine.Single(r => r.Kind == "process.exit").Data);
        Assert.DoesNotContain(sandbox.EnvdAccessToken, string.Join("\n", mine.Select(r => r.Data)));

        var store = Host.Services.GetRequiredService<IStore>();
        var result = await AuditVerifier.VerifyAsync(store.ReadAuditAsync(0, null, CancellationToken.None), CancellationToken.None);
        Assert.True(result.Ok, result.Reason);
    }
}
