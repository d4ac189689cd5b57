using System.Collections.Concurrent;
using Airlock.Core.Auditing;
using Airlock.Core.Sandboxes;
using Airlock.Envd;
using Airlock.Sandboxes.Agent;
using Airlock.Sandboxes.Live;
using Microsoft.Extensions.Logging;

namespace Airlock.Sandboxes;

/// <summary>
/// Notices a sandbox whose guest agent stopped answering (stopped, out of threads, a guest that powered off) so it is
/// not listed <c>running</c> while nothing in it can start: every <see cref="SandboxOptions.HealthInterval"/> each
/// running sandbox's agent gets a <c>GET /health</c> on a fresh connection; after
/// <see cref="SandboxOptions.HealthMisses"/> consecutive misses it is marked <see cref="SandboxState.Unresponsive"/>
/// (reason in the record, audited), and the first answer after that marks it running again (audited).
/// </summary>
/// <remarks>
/// <code>
/// timer ─ for each live sandbox (not ending, pausing, frozen or draining), in parallel:
///   GET /health (Connection: close, HealthTimeout) ─ answered ─ misses = 0 ─ was unresponsive? → running   (audit sandbox.responsive)
///                                                 └ missed  ─ misses++  ─ misses ≥ HealthMisses and running? → unresponsive (audit sandbox.unresponsive)
/// </code>
/// Marking only changes the record (under the sandbox's gate): the instance, its quota, its timeout and a kill are
/// untouched, so an unresponsive sandbox can still be killed, times out as before and still counts against the quota.
/// </remarks>
internal sealed class SandboxHealth(SandboxContext context)
{
    private readonly ConcurrentDictionary<string, int> _misses = new(StringComparer.Ordinal);
    private int _checking;

    /// <summary>One round over every live sandbox; a round still running when the next is due makes that one a no-op.</summary>
    public async Task CheckAllAsync(CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _checking, 1) == 1)
        {
            return;
        }

        try
        {
            var live = context.Registry.All.Where(Checked).ToList();
            foreach (var gone in _misses.Keys.Except(live.Select(l => l.Record.SandboxId), StringComparer.Ordinal))
            {
                _misses.TryRemove(gone, out _);
            }

            await Task.WhenAll(live.Select(l => CheckAsync(l, cancellationToken))).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // airlockd is stopping
        }
        catch (Exception ex)
        {
            LifecycleLog.Unexpected(context.Logger, ex, "agent health check");
        }
        finally
        {
            Volatile.Write(ref _checking, 0);
        }
    }

    /// <summary>Checked: a sandbox whose agent should be answering now.</summary>
    private static bool Checked(LiveSandbox live) =>
        !live.Ending && !live.Pausing && !live.Frozen && !live.Draining
        && live.Record.State is SandboxState.Running or SandboxState.Unresponsive;

    private async Task CheckAsync(LiveSandbox live, CancellationToken cancellationToken)
    {
        var id = live.Record.SandboxId;
        var miss = await ProbeAsync(id, cancellationToken).ConfigureAwait(false);
        if (miss is null)
        {
            _misses.TryRemove(id, out _);
            if (live.Record.State == SandboxState.Unresponsive)
            {
                await MarkAsync(live, SandboxState.Unresponsive, SandboxState.Running, null, cancellationToken).ConfigureAwait(false);
            }

            return;
        }

        var misses = _misses.AddOrUpdate(id, 1, (_, n) => n + 1);
        if (misses >= context.Options.HealthMisses && live.Record.State == SandboxState.Running)
        {
            var reason = $"guest agent missed {misses} health checks {context.Options.HealthInterval.TotalSeconds:0.#} s apart (last: {miss})";
            await MarkAsync(live, SandboxState.Running, SandboxState.Unresponsive, reason, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Null when the agent answered, else why not.</summary>
    private async Task<string?> ProbeAsync(string sandboxId, CancellationToken cancellationToken)
    {
        // A fresh connection each time (not the forwarder's pool): a connect that fails is itself the answer. The
        // deadline runs on the lifecycle's clock; the client's own is only a backstop in real time.
        using var timeout = new CancellationTokenSource(context.Options.HealthTimeout, context.Time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, cancellationToken);
        using var http = context.Connector.CreateUnpooledClient(context.Options.HealthTimeout + context.Options.HealthTimeout);
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(SandboxConnector.BaseUri(sandboxId, EnvdProtocol.Port), "health"));
        request.Headers.ConnectionClose = true;
        try
        {
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, linked.Token).ConfigureAwait(false);
            return (int)response.StatusCode < 500 ? null : $"HTTP {(int)response.StatusCode}";
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            return $"no answer within {context.Options.HealthTimeout.TotalSeconds:0.#} s";
        }
        catch (Exception ex) when (ex is HttpRequestException or IOException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return ex.Message;
        }
    }

    private async Task MarkAsync(LiveSandbox live, SandboxState from, SandboxState to, string? reason, CancellationToken cancellationToken)
    {
        await live.Gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // Re-checked under the gate: a kill, pause or another round may have moved it meanwhile.
            if (!Checked(live) || live.Record.State != from || !context.Registry.TryGet(live.Record.SandboxId, out var current) || !ReferenceEquals(current, live))
            {
                return;
            }

            live.Record = live.Record with { State = to, FailureReason = reason };
            await context.Store.UpdateSandboxAsync(live.Record, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            live.Gate.Release();
        }

        if (to == SandboxState.Unresponsive)
        {
            LifecycleLog.SandboxUnresponsive(context.Logger, live.Record.SandboxId, reason ?? "");
            await context.AuditAsync(AuditKinds.Unresponsive, live.Record, AuditJson.Object(("reason", reason)), cancellationToken).ConfigureAwait(false);
        }
        else
        {
            LifecycleLog.SandboxResponsive(context.Logger, live.Record.SandboxId);
            await context.AuditAsync(AuditKinds.Responsive, live.Record, AuditJson.Object(("state", "running")), cancellationToken).ConfigureAwait(false);
        }
    }
}
