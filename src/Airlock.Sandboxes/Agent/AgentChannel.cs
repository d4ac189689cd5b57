using System.Text.Json;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Airlock.Envd;
using Airlock.Envd.Client;

namespace Airlock.Sandboxes.Agent;

/// <summary>What the lifecycle says to a sandbox's guest agent: are you up, here is your identity, what do you use.</summary>
internal sealed class AgentChannel(SandboxConnector connector, TimeProvider time, SandboxOptions options)
{
    /// <summary>Waits until the agent answers its health check with the sandbox's token.</summary>
    public Task WaitReadyAsync(string id, string token, ISandboxInstance instance, CancellationToken cancellationToken) =>
        RetryAsync(id, instance, TimeSpan.FromSeconds(2), (http, ct) =>
            new EnvdClient(http, new EnvdClientOptions { BaseAddress = SandboxConnector.BaseUri(id, EnvdProtocol.Port), AccessToken = token }).HealthAsync(ct), cancellationToken);

    /// <summary>Hands a restored, booted or resumed guest its identity as soon as its agent answers; the boot token stops working.</summary>
    public Task SetIdentityWhenReadyAsync(string id, ISandboxInstance instance, string bootToken, string token, IReadOnlyDictionary<string, string>? env, CancellationToken cancellationToken) =>
        RetryAsync(id, instance, TimeSpan.FromSeconds(10), async (http, ct) =>
        {
            await SetIdentityAsync(http, id, bootToken, token, env, ownKernel: instance.Report.Boundary == BoundaryKind.MicroVm.Name(), ct).ConfigureAwait(false);
            return true;
        }, cancellationToken);

    /// <summary>The guest's own view of its resources (envd's <c>GET /metrics</c>), for boundaries with their own kernel.</summary>
    public async Task<ResourceSample?> GuestMetricsAsync(string id, string token, CancellationToken cancellationToken)
    {
        using var http = connector.CreateClient(TimeSpan.FromSeconds(5));
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(SandboxConnector.BaseUri(id, EnvdProtocol.Port), "metrics"));
        request.Headers.Add("X-Access-Token", token);
        using var response = await http.SendAsync(request, cancellationToken).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            return null;
        }

        await using var body = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        using var json = await JsonDocument.ParseAsync(body, cancellationToken: cancellationToken).ConfigureAwait(false);
        var root = json.RootElement;
        long Long(string name) => root.TryGetProperty(name, out var v) && v.TryGetInt64(out var n) ? n : 0;
        return new ResourceSample
        {
            At = time.GetUtcNow(),
            CpuCount = (int)Long("cpu_count"),
            CpuUsedPct = root.TryGetProperty("cpu_used_pct", out var pct) && pct.TryGetDouble(out var p) ? p : null,
            MemoryUsedBytes = Long("mem_used"),
            MemoryTotalBytes = Long("mem_total"),
            DiskUsedBytes = Long("disk_used"),
            DiskTotalBytes = Long("disk_total"),
        };
    }

    private async Task SetIdentityAsync(HttpClient http, string id, string bootToken, string token, IReadOnlyDictionary<string, string>? env, bool ownKernel, CancellationToken cancellationToken)
    {
        var client = new EnvdClient(http, new EnvdClientOptions { BaseAddress = SandboxConnector.BaseUri(id, EnvdProtocol.Port), AccessToken = bootToken, UseBinaryFormat = true });

        // A container shares the host's kernel, clock and random pool (and may not set them): it gets only its token.
        var request = ownKernel
            ? new Envd.Protocol.Agent.SetIdentityRequest
            {
                AccessToken = token,
                Hostname = "sandbox",
                MachineId = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16)),
                Entropy = Google.Protobuf.ByteString.CopyFrom(System.Security.Cryptography.RandomNumberGenerator.GetBytes(64)),
                UnixTimeNs = (time.GetUtcNow() - DateTimeOffset.UnixEpoch).Ticks * 100,
                ReplaceEnvs = env is not null,
            }
            : new Envd.Protocol.Agent.SetIdentityRequest { AccessToken = token, ReplaceEnvs = env is not null };
        if (env is not null)
        {
            foreach (var (name, value) in env)
            {
                request.Envs[name] = value;
            }
        }

        await client.SetIdentityAsync(request, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Retries <paramref name="probe"/> until the agent answers, the entry process exits, or the ready timeout passes.</summary>
    private async Task RetryAsync(string id, ISandboxInstance instance, TimeSpan attemptTimeout, Func<HttpClient, CancellationToken, Task<bool>> probe, CancellationToken cancellationToken)
    {
        using var http = connector.CreateClient(attemptTimeout);
        var deadline = time.GetUtcNow() + options.AgentReadyTimeout;
        string? last = null;
        while (time.GetUtcNow() < deadline)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (instance.Exited.IsCompleted)
            {
                throw new InvalidOperationException($"the sandbox's entry process exited before the agent was ready: {await instance.Exited.ConfigureAwait(false)}");
            }

            try
            {
                if (await probe(http, cancellationToken).ConfigureAwait(false))
                {
                    return;
                }
            }
            catch (Exception ex) when (ex is HttpRequestException or IOException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
            {
                last = ex.Message;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(20), time, cancellationToken).ConfigureAwait(false);
        }

        throw new TimeoutException($"guest agent {id} did not become ready within {options.AgentReadyTimeout.TotalSeconds:0} s ({last ?? "no answer"})");
    }
}
