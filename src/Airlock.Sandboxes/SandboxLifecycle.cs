using Airlock.Core.Auditing;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Airlock.Core.Storage;
using Airlock.Sandboxes.Agent;
using Airlock.Sandboxes.Live;
using Airlock.Sandboxes.Policy;
using Microsoft.Extensions.Logging;

namespace Airlock.Sandboxes;

/// <summary>One line of a sandbox's log (E2B's <c>GET /sandboxes/{id}/logs</c>).</summary>
public sealed record SandboxLogLine(DateTimeOffset At, string Level, string Message, string Source);

/// <summary>
/// Every sandbox's lifecycle on this node, behind one small surface: the control API, the envd gateway, the CLI's
/// server and the tests talk to this; the verbs live in their own collaborators.
/// </summary>
/// <remarks>
/// <code>
///                ┌ ISandboxPolicy (boundary, limits, network, lifecycle, quota reservation)
/// SandboxLifecycle ─ SandboxCreator ─ SandboxSupervisor (timeout, exit watch) ─ SandboxTerminator (end, cleanup)
///                ├ SandboxPauser / SandboxResumer ─ SandboxReaper ─ SandboxReconciler ─ UsageMeter ─ SandboxMetrics
///                └ SandboxContext: store, audit, drivers, network, connector, agent channel, registry, clock
/// </code>
/// </remarks>
public sealed class SandboxLifecycle : IAsyncDisposable
{
    private static readonly SandboxState[] Listed = [SandboxState.Creating, SandboxState.Running, SandboxState.Unresponsive, SandboxState.Pausing, SandboxState.Paused, SandboxState.Resuming];

    private readonly SandboxContext _context;
    private readonly SandboxCreator _creator;
    private readonly SandboxTerminator _terminator;
    private readonly SandboxSupervisor _supervisor;
    private readonly SandboxPauser _pauser;
    private readonly SandboxResumer _resumer;
    private readonly SandboxReaper _reaper;
    private readonly SandboxReconciler _reconciler;
    private readonly UsageMeter _meter;
    private readonly SandboxMetrics _metrics;
    private readonly SandboxHealth _health;
    private ITimer? _reaperTimer;
    private ITimer? _metricsTimer;
    private ITimer? _healthTimer;

    public SandboxLifecycle(
        IStore store,
        IAuditLog audit,
        IEnumerable<ISandboxDriver> drivers,
        INetworkManager network,
        SandboxConnector connector,
        ITemplateSource templates,
        ActivityTracker activity,
        TimeProvider time,
        SandboxOptions options,
        string guestAgentPath,
        ILoggerFactory loggers,
        ISandboxPolicy? policy = null)
    {
        ArgumentNullException.ThrowIfNull(loggers);
        ArgumentNullException.ThrowIfNull(options);
        var byBoundary = drivers.ToDictionary(d => d.Boundary);
        Quota = new QuotaLedger(options.MaxSandboxesPerTenant, options.MaxTenantMemoryMiB, options.MaxTenantVCpus);
        policy ??= new DefaultSandboxPolicy(byBoundary, templates, Quota, options, loggers.CreateLogger<DefaultSandboxPolicy>());
        _context = new SandboxContext(store, audit, byBoundary, network, connector, policy, activity, time, options, guestAgentPath, loggers.CreateLogger<SandboxLifecycle>());
        _meter = new UsageMeter(_context);
        _terminator = new SandboxTerminator(_context, _meter);
        _pauser = new SandboxPauser(_context, _terminator, _meter);
        _supervisor = new SandboxSupervisor(_context, _terminator, _pauser);
        _pauser.Rearm = _supervisor.Arm;
        _creator = new SandboxCreator(_context, templates, _terminator, _supervisor);
        _resumer = new SandboxResumer(_context, _meter, _terminator, _supervisor.Supervise, _supervisor.Arm);
        _reaper = new SandboxReaper(_context, _terminator, _meter);
        _reconciler = new SandboxReconciler(_context, _terminator, _supervisor.Supervise);
        _metrics = new SandboxMetrics(_context);
        _health = new SandboxHealth(_context);
    }

    /// <summary>The tenant quota counters (what is reserved now).</summary>
    public QuotaLedger Quota { get; }

    public IReadOnlyDictionary<BoundaryKind, ISandboxDriver> Drivers => _context.Drivers;

    public SandboxOptions Options => _context.Options;

    public Task<SandboxHandle> CreateAsync(SandboxSpec spec, CancellationToken cancellationToken) => _creator.CreateAsync(spec, cancellationToken);

    public Task<SandboxRecord> GetAsync(string tenantId, string sandboxId, CancellationToken cancellationToken) => _context.GetAsync(tenantId, sandboxId, cancellationToken);

    /// <summary>
    /// The tenant's sandboxes in <paramref name="states"/> (default: all not ended) whose metadata has every pair given,
    /// oldest first. Unresponsive is a kind of running: asking for running sandboxes lists unresponsive ones too.
    /// </summary>
    public async Task<IReadOnlyList<SandboxRecord>> ListAsync(string tenantId, IReadOnlyCollection<SandboxState>? states, IReadOnlyDictionary<string, string> metadata, CancellationToken cancellationToken)
    {
        if (states is not null && states.Contains(SandboxState.Running) && !states.Contains(SandboxState.Unresponsive))
        {
            states = [.. states, SandboxState.Unresponsive];
        }

        var records = await _context.Store.ListSandboxesAsync(tenantId, states ?? Listed, cancellationToken);
        return records
            .Where(r => metadata.All(m => r.Metadata.TryGetValue(m.Key, out var v) && v == m.Value))
            .OrderBy(r => r.CreatedAt).ThenBy(r => r.SandboxId, StringComparer.Ordinal)
            .ToList();
    }

    /// <summary>Envd routing: a sandbox that serves envd traffic now, by id regardless of tenant (the access token is the credential there).</summary>
    public bool TryGetServing(string sandboxId, out SandboxRecord record)
    {
        if (_context.Registry.TryGet(sandboxId, out var live) && live.Serving)
        {
            record = live.Record;
            return true;
        }

        record = null!;
        return false;
    }

    /// <summary>
    /// A signed file URL that names no sandbox (E2B's SDK with <c>E2B_SANDBOX_URL</c> set): the serving sandbox whose
    /// access token made the signature, or null. The signature is the credential, as the guest agent checks again.
    /// </summary>
    public string? FindSigner(Func<string, bool> signedBy)
    {
        ArgumentNullException.ThrowIfNull(signedBy);
        foreach (var live in _context.Registry.All)
        {
            if (live.Serving && live.Record.AccessToken is { } token && signedBy(token))
            {
                return live.Record.SandboxId;
            }
        }

        return null;
    }

    /// <summary>Marks one envd request in flight (a timeout pause lets it finish first).</summary>
    public IDisposable EnterActivity(string sandboxId) => _context.Activity.Enter(sandboxId);

    public async Task KillAsync(string tenantId, string sandboxId, CancellationToken cancellationToken)
    {
        var record = await _context.GetAsync(tenantId, sandboxId, cancellationToken);
        if (_context.Registry.TryGet(sandboxId, out var live) && !live.Ending)
        {
            await _terminator.EndAsync(live, SandboxState.Killed, live.Frozen ? "killed by request while paused (frozen)" : "killed by request", AuditKinds.Kill, cancellationToken);
            return;
        }

        if (record.State == SandboxState.Paused && await _terminator.KillPausedAsync(tenantId, sandboxId, cancellationToken))
        {
            return;
        }

        _ = await _context.GetLiveAsync(tenantId, sandboxId, cancellationToken); // throws the right not-found
    }

    public async Task SetTimeoutAsync(string tenantId, string sandboxId, int seconds, CancellationToken cancellationToken)
    {
        var live = await _context.GetLiveAsync(tenantId, sandboxId, cancellationToken);
        await _resumer.ExtendAsync(live, seconds, cancellationToken);
    }

    public Task PauseAsync(string tenantId, string sandboxId, PauseSpec spec, CancellationToken cancellationToken) =>
        _pauser.PauseAsync(tenantId, sandboxId, spec, cancellationToken);

    /// <summary>Resume or connect: a running sandbox is returned as it is (Resumed false); a paused one is restored (true).</summary>
    public Task<SandboxHandle> ResumeAsync(string tenantId, string sandboxId, ResumeSpec spec, CancellationToken cancellationToken) =>
        _resumer.ResumeAsync(tenantId, sandboxId, spec, cancellationToken);

    public Task<(DateTimeOffset At, IReadOnlyList<SandboxRecord> Sandboxes)> UsageAsync(string tenantId, CancellationToken cancellationToken) =>
        _meter.ReportAsync(tenantId, cancellationToken);

    /// <summary>Metrics of a running sandbox; a paused one is a conflict, an ended one not found.</summary>
    public async Task<IReadOnlyList<SandboxMetric>> MetricsAsync(string tenantId, string sandboxId, DateTimeOffset? from, DateTimeOffset? to, CancellationToken cancellationToken)
    {
        var record = await _context.GetAsync(tenantId, sandboxId, cancellationToken);
        if (record.State is SandboxState.Paused or SandboxState.Pausing or SandboxState.Resuming)
        {
            throw SandboxException.Conflict("sandbox_paused", $"Sandbox {sandboxId} is {record.State.ToString().ToLowerInvariant()}: nothing runs, so it has no metrics; resume it first.");
        }

        var live = await _context.GetLiveAsync(tenantId, sandboxId, cancellationToken);
        return await _metrics.ReadAsync(live, from, to, cancellationToken);
    }

    /// <summary>
    /// What happened to a sandbox (its lifecycle records from the audit trail) and, while it runs, the last lines its
    /// entry process and agent wrote on the host side.
    /// </summary>
    public async Task<IReadOnlyList<SandboxLogLine>> LogsAsync(string tenantId, string sandboxId, DateTimeOffset? from, int limit, CancellationToken cancellationToken)
    {
        var record = await _context.GetAsync(tenantId, sandboxId, cancellationToken);
        var lines = new List<SandboxLogLine>();
        await foreach (var audit in _context.Store.ReadSandboxAuditAsync(tenantId, sandboxId, cancellationToken))
        {
            if (from is null || audit.Time >= from)
            {
                lines.Add(new SandboxLogLine(audit.Time, audit.Kind.EndsWith(".failed", StringComparison.Ordinal) || audit.Kind == AuditKinds.Failed ? "error" : "info", $"{audit.Kind} {audit.Data}", "airlockd"));
            }
        }

        if (_context.Registry.TryGet(record.SandboxId, out _))
        {
            foreach (var name in new[] { "sandbox.log", "qemu.log" })
            {
                var path = Path.Combine(_context.Options.StateDir(sandboxId), name);
                if (File.Exists(path))
                {
                    var at = File.GetLastWriteTimeUtc(path);
                    lines.AddRange((await File.ReadAllLinesAsync(path, cancellationToken)).TakeLast(200).Select(l => new SandboxLogLine(at, "info", l, name)));
                }
            }
        }

        return lines.OrderBy(l => l.At).TakeLast(Math.Clamp(limit, 1, 1000)).ToList();
    }

    public Task AuditAsync(string kind, SandboxRecord record, string data, CancellationToken cancellationToken) => _context.AuditAsync(kind, record, data, cancellationToken);

    public Task<IReadOnlyList<string>> ReconcileAsync(CancellationToken cancellationToken) => _reconciler.ReconcileAsync(cancellationToken);

    /// <summary>One reaper pass (the timer runs it every <see cref="SandboxOptions.ReaperInterval"/>).</summary>
    public Task<IReadOnlyList<string>> ReapAsync(CancellationToken cancellationToken) => _reaper.ReapAsync(cancellationToken);

    /// <summary>One round of agent health checks (the timer runs it every <see cref="SandboxOptions.HealthInterval"/>).</summary>
    public Task CheckHealthAsync(CancellationToken cancellationToken) => _health.CheckAllAsync(cancellationToken);

    /// <summary>Starts the periodic reaper, metrics sampling and agent health checks.</summary>
    public void StartBackground()
    {
        if (_context.Options.HealthInterval > TimeSpan.Zero)
        {
            _healthTimer = _context.Time.CreateTimer(_ => _ = _health.CheckAllAsync(_context.Stopping.Token), null, _context.Options.HealthInterval, _context.Options.HealthInterval);
        }

        _reaperTimer = _context.Time.CreateTimer(_ => _ = _reaper.ReapAsync(_context.Stopping.Token), null, _context.Options.ReaperInterval, _context.Options.ReaperInterval);
        _metricsTimer = _context.Time.CreateTimer(_ => _ = _metrics.SampleAllAsync(_context.Stopping.Token), null, TimeSpan.FromSeconds(1), SandboxMetrics.Interval);
    }

    /// <summary>Graceful shutdown: kill every sandbox, or detach them for re-adoption when configured to keep them.</summary>
    public async Task ShutdownAsync(CancellationToken cancellationToken)
    {
        await _context.Stopping.CancelAsync();
        foreach (var timer in new[] { _reaperTimer, _metricsTimer, _healthTimer })
        {
            if (timer is not null)
            {
                await timer.DisposeAsync();
            }
        }

        var all = _context.Registry.All.ToList();
        if (_context.Options.KeepSandboxesOnShutdown)
        {
            foreach (var live in all)
            {
                live.TimeoutTimer?.Dispose();
                await live.Instance.DetachAsync();
            }

            LifecycleLog.Shutdown(_context.Logger, all.Count, "kept running");
            return;
        }

        // A frozen container would die with airlockd: keep what can be kept (its files) as a pause to disk.
        foreach (var frozen in all.Where(l => l.Frozen && !l.Ending))
        {
            try
            {
                await _pauser.PauseLiveAsync(frozen, "airlockd shutdown while frozen", keepMemory: false, cancellationToken);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                LifecycleLog.Unexpected(_context.Logger, ex, "pause to disk of a frozen sandbox at shutdown; killing it");
            }
        }

        all = _context.Registry.All.ToList();
        await Task.WhenAll(all.Select(live => _terminator.EndAsync(live, SandboxState.Killed, "airlockd shutdown", AuditKinds.Kill, cancellationToken)));
        LifecycleLog.Shutdown(_context.Logger, all.Count, "killed");
    }

    public async ValueTask DisposeAsync()
    {
        if (!_context.Stopping.IsCancellationRequested)
        {
            await ShutdownAsync(CancellationToken.None);
        }

        _context.Stopping.Dispose();
    }
}
