using System.Diagnostics;
using System.Text.Json;
using Airlock.Core.Auditing;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Airlock.Sandboxes.Live;
using Airlock.Sandboxes.Policy;

namespace Airlock.Sandboxes;

/// <summary>Creates sandboxes.</summary>
/// <remarks>
/// <code>
/// policy admit (boundary, limits, network, lifecycle; quota reserved) ─ store(creating) ─ audit create
///   ─ template rootfs ─ netns (policy) ─ driver start ─ agent ready / identity ─ store(running) ─ audit boundary ─ supervise
/// any failure: cleanup ─ release quota ─ store(failed) ─ audit
/// </code>
/// </remarks>
internal sealed class SandboxCreator(SandboxContext context, ITemplateSource templates, SandboxTerminator terminator, SandboxSupervisor supervisor)
{
    public async Task<SandboxHandle> CreateAsync(SandboxSpec spec, CancellationToken cancellationToken)
    {
        var admission = await context.Policy.AdmitAsync(spec, cancellationToken);
        var id = SandboxIds.New();
        var token = AccessTokens.New();
        var now = context.Now;
        var record = new SandboxRecord
        {
            SandboxId = id,
            TenantId = spec.TenantId,
            TemplateId = admission.TemplateId,
            Boundary = admission.Boundary,
            State = SandboxState.Creating,
            CreatedAt = now,
            EndAt = now.AddSeconds(admission.TimeoutSeconds),
            AccessTokenHash = AccessTokens.Hash(token),
            AccessToken = token,
            Metadata = admission.Metadata,
            EnvVars = admission.Env,
            Limits = admission.Limits,
            Lifecycle = admission.Lifecycle,
            NetworkPolicy = admission.Network,
            NodeId = context.Options.NodeId,
            Usage = new SandboxUsage { MeteredAt = now },
        };
        try
        {
            await context.Store.InsertSandboxAsync(record, cancellationToken);
            Failpoints.Hit(Failpoints.CreateAfterInsert);
        }
        catch
        {
            admission.Reservation.Dispose();
            throw;
        }

        var stopwatch = Stopwatch.StartNew();
        SandboxNetwork? network = null;
        ISandboxInstance? instance = null;
        try
        {
            // Inside the try: a create audit that cannot be written (a full disk, a cancelled request) must not leak the reservation.
            await context.AuditAsync(AuditKinds.SandboxCreate, record, AuditJson.Object(
                ("templateId", record.TemplateId),
                ("risk", admission.Risk.ToString().ToLowerInvariant()),
                ("boundary", admission.Boundary.Name()),
                ("timeoutSeconds", admission.TimeoutSeconds),
                ("onTimeout", admission.Lifecycle.OnTimeout.ToString().ToLowerInvariant()),
                ("keepMemory", admission.Lifecycle.KeepMemory),
                ("autoResume", admission.Lifecycle.AutoResume),
                ("network", admission.Network.IsDenyAll ? "deny-all" : "policy"),
                ("internetRequested", spec.AllowInternetAccess),
                ("metadataKeys", record.Metadata.Keys.ToArray()),
                ("envNames", record.EnvVars.Keys.ToArray()),
                ("downgrade", admission.Downgrade),
                ("node", record.NodeId)), cancellationToken);

            var rootfs = await templates.GetRootFsAsync(record.TemplateId, cancellationToken);
            Directory.CreateDirectory(context.Options.StateDir(id));
            network = await context.Network.CreateAsync(id, admission.Network, cancellationToken);
            Failpoints.Hit(Failpoints.CreateAfterNetwork);
            var launch = context.Launch(record, token, network, rootfs, coldBoot: spec.ColdBoot);
            instance = await context.Drivers[record.Boundary].StartAsync(launch, cancellationToken);
            Failpoints.Hit(Failpoints.CreateAfterDriverStart);
            context.Connector.Register(id, network);
            if (instance.BootToken is { } bootToken)
            {
                await context.Agent.SetIdentityWhenReadyAsync(id, instance, bootToken, token, record.EnvVars, cancellationToken);
            }
            else
            {
                await context.Agent.WaitReadyAsync(id, token, instance, cancellationToken);
            }

            Failpoints.Hit(Failpoints.CreateBeforeRunning);
            var report = admission.Downgrade is null ? instance.Report : instance.Report with { Downgrade = admission.Downgrade };
            record = record with { State = SandboxState.Running, Report = report, Network = network, HostPid = instance.HostPid, Usage = record.Usage with { MeteredAt = context.Now } };
            await context.Store.UpdateSandboxAsync(record, cancellationToken);
            await context.AuditAsync(AuditKinds.BoundaryGot, record, AuditJson.Object(("report", new AuditJson.RawJson(JsonSerializer.Serialize(report, SandboxesJsonContext.Default.BoundaryReport)))), cancellationToken);

            var live = new LiveSandbox(record, instance, admission.Reservation);
            context.Registry.Add(live);
            supervisor.Supervise(live);
            LifecycleLog.SandboxStarted(context.Logger, id, report.Boundary, report.Driver, stopwatch.ElapsedMilliseconds);
            return new SandboxHandle(record, token, Resumed: false);
        }
        catch (Exception ex)
        {
            var reason = ex is OperationCanceledException ? "creation cancelled" : $"creation failed: {ex.Message}";
            LifecycleLog.SandboxFailed(context.Logger, id, reason);
            context.Connector.Unregister(id);
            await terminator.CleanupAsync(id, record.Boundary, instance, network);
            admission.Reservation.Dispose();
            record = record with { State = SandboxState.Failed, FailureReason = reason, AccessToken = null };
            await context.Store.UpdateSandboxAsync(record, CancellationToken.None);
            await context.AuditAsync(AuditKinds.Failed, record, AuditJson.Object(("reason", reason)), CancellationToken.None);
            throw ex switch
            {
                SandboxException or OperationCanceledException => ex,
                NotSupportedException => new SandboxException(SandboxErrorKind.Unavailable, "sandbox_start_failed", $"Sandbox {id} could not start: {ex.Message}", ex),
                _ => new SandboxException(SandboxErrorKind.Internal, "sandbox_start_failed", $"Sandbox {id} could not start: {ex.Message}", ex),
            };
        }
    }
}
