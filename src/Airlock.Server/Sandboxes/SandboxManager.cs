using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using Airlock.Core.Api;
using Airlock.Core.Auditing;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Airlock.Core.Storage;
using Airlock.Envd;
using Airlock.Envd.Client;
using Airlock.Server.Api;
using Airlock.Server.Auth;
using Microsoft.Extensions.Logging;

namespace Airlock.Server.Sandboxes;

/// <summary>
/// Owns every sandbox's lifecycle on this node.
/// </summary>
/// <remarks>
/// <code>
/// create:  validate ─ pick boundary (never weaker without consent) ─ store(creating) ─ audit create
///          ─ template rootfs ─ netns link ─ driver start ─ agent health ─ store(running) ─ audit boundary ─ arm timeout
/// end:     kill | timeout | entry process exit ─ driver kill ─ netns delete ─ state dir removed ─ store(killed|failed) ─ audit
/// </code>
/// </remarks>
internal sealed class SandboxManager : IAsyncDisposable
{
    private static readonly SandboxState[] LiveStates = [SandboxState.Creating, SandboxState.Running, SandboxState.Pausing, SandboxState.Paused, SandboxState.Resuming];

    private readonly ConcurrentDictionary<string, LiveSandbox> _live = new(StringComparer.Ordinal);
    private readonly IStore _store;
    private readonly IAuditLog _audit;
    private readonly IReadOnlyDictionary<BoundaryKind, ISandboxDriver> _drivers;
    private readonly INetworkManager _network;
    private readonly SandboxConnector _connector;
    private readonly TemplateProvider _templates;
    private readonly TimeProvider _time;
    private readonly AirlockServerOptions _options;
    private readonly ILogger _logger;
    private readonly string _guestAgentPath;
    private readonly CancellationTokenSource _stopping = new();

    public SandboxManager(
        IStore store,
        IAuditLog audit,
        IEnumerable<ISandboxDriver> drivers,
        INetworkManager network,
        SandboxConnector connector,
        TemplateProvider templates,
        TimeProvider time,
        AirlockServerOptions options,
        ILogger<SandboxManager> logger)
    {
        _store = store;
        _audit = audit;
        _drivers = drivers.ToDictionary(d => d.Boundary);
        _network = network;
        _connector = connector;
        _templates = templates;
        _time = time;
        _options = options;
        _logger = logger;
        _guestAgentPath = GuestAgentLocator.Find(options.GuestAgentPath);
    }

    public string SandboxesDir => Path.Combine(_options.DataDir, "sandboxes");

    public IReadOnlyDictionary<BoundaryKind, ISandboxDriver> Drivers => _drivers;

    public async Task<SandboxCreated> CreateAsync(string tenantId, NewSandboxRequest request, CancellationToken cancellationToken)
    {
        var templateId = string.IsNullOrWhiteSpace(request.TemplateId) ? "base" : request.TemplateId.Trim();
        _templates.EnsureKnown(templateId);
        var timeout = ValidateTimeout(request.Timeout ?? _options.DefaultTimeoutSeconds);
        var env = ValidateEnv(request.EnvVars);
        var metadata = ValidateMetadata(request.Metadata);
        var limits = ValidateLimits(request);
        var (boundary, risk, downgrade) = await ChooseBoundaryAsync(request, cancellationToken);

        if (boundary == BoundaryKind.MicroVm && request.DiskMB is { } asked && asked != _options.DefaultLimits.DiskMiB)
        {
            throw ApiProblem.BadRequest("invalid_disk", $"microvm sandboxes get the template's {_options.DefaultLimits.DiskMiB} MiB root disk; diskMB applies to the process and container boundaries.");
        }

        CheckTenantQuota(tenantId, limits);
        var onTimeout = "kill";
        if (request.AutoPause == true)
        {
            if (_drivers[boundary] is not IPausableDriver)
            {
                throw ApiProblem.BadRequest("pause_unsupported", $"autoPause needs a boundary that can pause to disk (microvm, container); this sandbox would get {boundary.Name()}.");
            }

            onTimeout = "pause";
        }

        var id = NewSandboxId();
        var token = ApiKeys.NewAccessToken();
        var now = _time.GetUtcNow();
        var record = new SandboxRecord
        {
            SandboxId = id,
            TenantId = tenantId,
            TemplateId = templateId,
            Boundary = boundary,
            State = SandboxState.Creating,
            CreatedAt = now,
            EndAt = now.AddSeconds(timeout),
            AccessTokenHash = ApiKeys.Hash(token),
            AccessToken = token,
            Metadata = metadata,
            EnvVars = env,
            Limits = limits,
            OnTimeout = onTimeout,
            Usage = new SandboxUsage { MeteredAt = now },
        };
        await _store.InsertSandboxAsync(record, cancellationToken);
        await AuditAsync(AuditKinds.SandboxCreate, record, AuditJson.Object(
            ("templateId", templateId),
            ("risk", risk.ToString().ToLowerInvariant()),
            ("boundary", boundary.Name()),
            ("timeoutSeconds", timeout),
            ("metadataKeys", metadata.Keys.ToArray()),
            ("envNames", env.Keys.ToArray()),
            ("downgrade", downgrade)), cancellationToken);

        var stopwatch = Stopwatch.StartNew();
        SandboxNetwork? network = null;
        ISandboxInstance? instance = null;
        var stateDir = Path.Combine(SandboxesDir, id);
        try
        {
            var rootfs = await _templates.GetRootFsAsync(templateId, cancellationToken);
            Directory.CreateDirectory(stateDir);
            network = await _network.CreateAsync(id, NetworkPolicy.DenyAll, cancellationToken);
            var launch = new SandboxLaunch
            {
                SandboxId = id,
                TemplateId = templateId,
                RootFs = rootfs,
                StateDir = stateDir,
                AccessToken = token,
                Limits = limits,
                Network = network,
                EnvVars = env,
                GuestAgentPath = _guestAgentPath,
                KeepOnShutdown = _options.KeepSandboxesOnShutdown,
                Hostname = "sandbox",
                ColdBoot = request.Cold == true,
            };
            instance = await _drivers[boundary].StartAsync(launch, cancellationToken);
            _connector.Register(id, network);
            if (instance.BootToken is { } bootToken)
            {
                await SetIdentityWhenReadyAsync(id, instance, bootToken, token, env, cancellationToken);
            }
            else
            {
                await WaitForAgentAsync(id, token, instance, cancellationToken);
            }

            var report = downgrade is null ? instance.Report : instance.Report with { Downgrade = downgrade };
            record = record with { State = SandboxState.Running, Report = report, Network = network, HostPid = instance.HostPid, Usage = record.Usage with { MeteredAt = _time.GetUtcNow() } };
            await _store.UpdateSandboxAsync(record, cancellationToken);
            await AuditAsync(AuditKinds.BoundaryGot, record, AuditJson.Object(("report", new AuditJson.RawJson(JsonSerializer.Serialize(report, ApiJsonContext.Default.BoundaryReport)))), cancellationToken);

            var live = new LiveSandbox(record, instance);
            _live[id] = live;
            Arm(live);
            Watch(live);
            ServerLog.SandboxStarted(_logger, id, report.Boundary, report.Driver, stopwatch.ElapsedMilliseconds);
            return new SandboxCreated
            {
                SandboxId = id,
                TemplateId = templateId,
                EnvdVersion = EnvdProtocol.Version,
                EnvdAccessToken = token,
                Domain = _options.Domain,
                Boundary = report,
            };
        }
        catch (Exception ex)
        {
            var reason = ex is OperationCanceledException ? "creation cancelled" : $"creation failed: {ex.Message}";
            ServerLog.SandboxFailed(_logger, id, reason);
            _connector.Unregister(id);
            await CleanupAsync(id, boundary, instance, network, stateDir);
            record = record with { State = SandboxState.Failed, FailureReason = reason, AccessToken = null };
            await _store.UpdateSandboxAsync(record, CancellationToken.None);
            await AuditAsync(AuditKinds.Failed, record, AuditJson.Object(("reason", reason)), CancellationToken.None);
            if (ex is ApiProblem or OperationCanceledException)
            {
                throw;
            }

            throw new ApiProblem(500, "sandbox_start_failed", $"Sandbox {id} could not start: {ex.Message}");
        }
    }

    public async Task<SandboxRecord> GetAsync(string tenantId, string sandboxId, CancellationToken cancellationToken)
    {
        var record = ValidId(sandboxId) ? await _store.GetSandboxAsync(tenantId, sandboxId, cancellationToken) : null;
        return record ?? throw ApiProblem.NotFound("sandbox_not_found", $"Sandbox {sandboxId} not found.");
    }

    /// <summary>A sandbox that must be running; a killed or failed one is a clear 404.</summary>
    public async Task<LiveSandbox> GetLiveAsync(string tenantId, string sandboxId, CancellationToken cancellationToken)
    {
        var record = await GetAsync(tenantId, sandboxId, cancellationToken);
        if (_live.TryGetValue(record.SandboxId, out var live) && !live.Ending)
        {
            return live.Frozen ? throw new ApiProblem(409, "sandbox_paused", $"Sandbox {sandboxId} is paused; resume it first.") : live;
        }

        throw ApiProblem.NotFound("sandbox_not_running", record.State.IsTerminal()
            ? $"Sandbox {sandboxId} is {record.State.ToString().ToLowerInvariant()}{(record.FailureReason is null ? "" : $" ({record.FailureReason})")}."
            : $"Sandbox {sandboxId} is not running.");
    }

    /// <summary>Envd routing: the sandbox by id regardless of tenant (the access token is the credential there).</summary>
    public bool TryGetLive(string sandboxId, out LiveSandbox live) =>
        _live.TryGetValue(sandboxId, out live!) && !live.Ending && !live.Frozen;

    public async Task<IReadOnlyList<SandboxRecord>> ListAsync(string tenantId, IReadOnlyCollection<SandboxState>? states, IReadOnlyDictionary<string, string> metadata, CancellationToken cancellationToken)
    {
        var records = await _store.ListSandboxesAsync(tenantId, states ?? LiveStates, cancellationToken);
        return records
            .Where(r => metadata.All(m => r.Metadata.TryGetValue(m.Key, out var v) && v == m.Value))
            .OrderBy(r => r.CreatedAt)
            .ToList();
    }

    public async Task KillAsync(string tenantId, string sandboxId, CancellationToken cancellationToken)
    {
        var record = await GetAsync(tenantId, sandboxId, cancellationToken);
        if (_live.TryGetValue(sandboxId, out var frozen) && frozen.Frozen && !frozen.Ending)
        {
            await EndAsync(frozen, SandboxState.Killed, "killed by request while paused (frozen)", AuditKinds.Kill, cancellationToken);
            return;
        }

        if (record.State == SandboxState.Paused)
        {
            // Nothing runs: delete its saved state and disk, under the resume gate so a resume cannot race it.
            var gate = _resumeGates.GetOrAdd(sandboxId, _ => new SemaphoreSlim(1, 1));
            await gate.WaitAsync(cancellationToken);
            try
            {
                record = await GetAsync(tenantId, sandboxId, cancellationToken);
                if (record.State == SandboxState.Paused)
                {
                    var usage = _drivers[record.Boundary] is IPausableDriver pausable ? MeterPaused(record, pausable, _time.GetUtcNow()) : record.Usage;
                    await _drivers[record.Boundary].CleanupAsync(sandboxId, Path.Combine(SandboxesDir, sandboxId), cancellationToken);
                    record = record with { State = SandboxState.Killed, AccessToken = null, EndAt = _time.GetUtcNow(), Usage = usage };
                    await _store.UpdateSandboxAsync(record, CancellationToken.None);
                    await AuditAsync(AuditKinds.Kill, record, AuditJson.Object(("reason", "killed by request while paused")), CancellationToken.None);
                    return;
                }
            }
            finally
            {
                gate.Release();
            }
        }

        var live = await GetLiveAsync(tenantId, sandboxId, cancellationToken);
        await EndAsync(live, SandboxState.Killed, "killed by request", AuditKinds.Kill, cancellationToken);
    }

    public async Task SetTimeoutAsync(string tenantId, string sandboxId, int seconds, CancellationToken cancellationToken)
    {
        var timeout = ValidateTimeout(seconds);
        var live = await GetLiveAsync(tenantId, sandboxId, cancellationToken);
        await live.Gate.WaitAsync(cancellationToken);
        try
        {
            if (live.Ending)
            {
                throw ApiProblem.NotFound("sandbox_not_running", $"Sandbox {sandboxId} is not running.");
            }

            live.Record = live.Record with { EndAt = _time.GetUtcNow().AddSeconds(timeout) };
            await _store.UpdateSandboxAsync(live.Record, cancellationToken);
            Arm(live);
        }
        finally
        {
            live.Gate.Release();
        }

        await AuditAsync(AuditKinds.TimeoutChanged, live.Record, AuditJson.Object(("seconds", timeout), ("endAt", live.Record.EndAt)), cancellationToken);
    }

    public Task AuditAsync(string kind, SandboxRecord record, string data, CancellationToken cancellationToken) =>
        _audit.AppendAsync(new AuditEntry(kind, record.TenantId, record.SandboxId, data), cancellationToken);

    private void Arm(LiveSandbox live)
    {
        live.TimeoutTimer?.Dispose();
        var due = live.Record.EndAt - _time.GetUtcNow();
        if (due < TimeSpan.Zero)
        {
            due = TimeSpan.Zero;
        }

        var id = live.Record.SandboxId;
        live.TimeoutTimer = _time.CreateTimer(_ => _ = OnTimeoutAsync(id), null, due, Timeout.InfiniteTimeSpan);
    }

    private async Task OnTimeoutAsync(string sandboxId)
    {
        if (!_live.TryGetValue(sandboxId, out var live) || live.Ending)
        {
            return;
        }

        try
        {
            if (live.Record.EndAt > _time.GetUtcNow())
            {
                Arm(live); // extended meanwhile
                return;
            }

            if (live.Frozen)
            {
                return; // paused in place: the retention, not the timeout, ends it
            }

            if (live.Record.OnTimeout == "pause" && _drivers[live.Record.Boundary] is IPausableDriver)
            {
                try
                {
                    if (live.Record.Boundary == BoundaryKind.Container && live.Instance is IFreezableInstance)
                    {
                        await FreezeLiveAsync(live, "timeout", _stopping.Token);
                    }
                    else
                    {
                        await PauseLiveAsync(live, "timeout", _stopping.Token);
                    }

                    return;
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    ServerLog.Unexpected(_logger, ex, "auto-pause on timeout; killing instead");
                }
            }

            await EndAsync(live, SandboxState.Killed, "timeout", AuditKinds.Timeout, _stopping.Token);
        }
        catch (Exception ex)
        {
            ServerLog.Unexpected(_logger, ex, "timeout");
        }
    }

    private void Watch(LiveSandbox live) =>
        _ = live.Instance.Exited.ContinueWith(
            async exited =>
            {
                if (live.Ending || live.Pausing || _stopping.IsCancellationRequested)
                {
                    return;
                }

                var reason = exited.IsCompletedSuccessfully ? $"entry process exited: {exited.Result}" : "entry process lost";
                try
                {
                    await EndAsync(live, SandboxState.Failed, reason, AuditKinds.Failed, CancellationToken.None);
                }
                catch (Exception ex)
                {
                    ServerLog.Unexpected(_logger, ex, "exit watcher");
                }
            },
            CancellationToken.None,
            TaskContinuationOptions.None,
            TaskScheduler.Default);

    private async Task EndAsync(LiveSandbox live, SandboxState state, string reason, string auditKind, CancellationToken cancellationToken)
    {
        await live.Gate.WaitAsync(cancellationToken);
        try
        {
            if (live.Ending)
            {
                return;
            }

            live.Ending = true;
            live.TimeoutTimer?.Dispose();
        }
        finally
        {
            live.Gate.Release();
        }

        var id = live.Record.SandboxId;
        _connector.Unregister(id);
        await CleanupAsync(id, live.Record.Boundary, live.Instance, live.Record.Network, Path.Combine(SandboxesDir, id));
        live.Record = live.Record with
        {
            Usage = Meter(live, _time.GetUtcNow()),
            State = state,
            FailureReason = state == SandboxState.Failed ? reason : null,
            AccessToken = null,
            HostPid = null,
            EndAt = _time.GetUtcNow(),
        };
        await _store.UpdateSandboxAsync(live.Record, CancellationToken.None);
        _live.TryRemove(id, out _);
        await AuditAsync(auditKind, live.Record, AuditJson.Object(("reason", reason)), CancellationToken.None);
        ServerLog.SandboxEnded(_logger, id, reason);
    }

    private async Task CleanupAsync(string id, BoundaryKind boundary, ISandboxInstance? instance, SandboxNetwork? network, string stateDir)
    {
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            if (instance is not null)
            {
                await instance.KillAsync(cts.Token);
                await instance.DisposeAsync();
            }

            await _drivers[boundary].CleanupAsync(id, stateDir, cts.Token);
            if (network is not null)
            {
                await _network.DeleteAsync(network, cts.Token);
            }
        }
        catch (Exception ex)
        {
            ServerLog.CleanupFailed(_logger, ex, id);
        }
    }

    private Task WaitForAgentAsync(string id, string token, ISandboxInstance instance, CancellationToken cancellationToken) =>
        WaitForAgentAsync(id, instance, TimeSpan.FromSeconds(2), (http, ct) =>
            new EnvdClient(http, new EnvdClientOptions { BaseAddress = SandboxConnector.BaseUri(id, EnvdProtocol.Port), AccessToken = token }).HealthAsync(ct), cancellationToken);

    /// <summary>Hands the guest its identity as soon as its agent answers: the call itself is the readiness probe.</summary>
    private Task SetIdentityWhenReadyAsync(string id, ISandboxInstance instance, string bootToken, string token, IReadOnlyDictionary<string, string>? env, CancellationToken cancellationToken) =>
        WaitForAgentAsync(id, instance, TimeSpan.FromSeconds(10), async (http, ct) =>
        {
            await SetIdentityAsync(http, id, bootToken, token, env, ownKernel: instance.Report.Boundary == BoundaryKind.MicroVm.Name(), ct);
            return true;
        }, cancellationToken);

    /// <summary>Retries <paramref name="probe"/> until the agent answers, the entry process exits, or 30 s pass.</summary>
    private async Task WaitForAgentAsync(string id, ISandboxInstance instance, TimeSpan attemptTimeout, Func<HttpClient, CancellationToken, Task<bool>> probe, CancellationToken cancellationToken)
    {
        using var http = _connector.CreateClient(attemptTimeout);
        var deadline = _time.GetUtcNow().AddSeconds(30);
        string? last = null;
        while (_time.GetUtcNow() < deadline)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (instance.Exited.IsCompleted)
            {
                throw new InvalidOperationException($"the sandbox's entry process exited before the agent was ready: {await instance.Exited}");
            }

            try
            {
                if (await probe(http, cancellationToken))
                {
                    return;
                }
            }
            catch (Exception ex) when (ex is HttpRequestException or IOException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
            {
                last = ex.Message;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(20), _time, cancellationToken);
        }

        throw new TimeoutException($"guest agent {id} did not become ready within 30 s ({last ?? "no answer"})");
    }

    private void CheckTenantQuota(string tenantId, SandboxLimits limits)
    {
        var mine = _live.Values.Where(l => l.Record.TenantId == tenantId && !l.Ending).ToList();
        if (mine.Count >= _options.MaxSandboxesPerTenant)
        {
            throw new ApiProblem(429, "quota_exceeded", $"Tenant already runs {mine.Count} sandboxes (limit {_options.MaxSandboxesPerTenant}).");
        }

        var memory = mine.Sum(l => l.Record.Limits.MemoryMiB);
        if (memory + limits.MemoryMiB > _options.MaxTenantMemoryMiB)
        {
            throw new ApiProblem(429, "memory_quota_exceeded", $"Tenant's running sandboxes reserve {memory} MiB; {limits.MemoryMiB} more would pass the tenant quota of {_options.MaxTenantMemoryMiB} MiB.");
        }

        var vcpus = mine.Sum(l => l.Record.Limits.VCpus);
        if (vcpus + limits.VCpus > _options.MaxTenantVCpus)
        {
            throw new ApiProblem(429, "cpu_quota_exceeded", $"Tenant's running sandboxes reserve {vcpus} vCPUs; {limits.VCpus} more would pass the tenant quota of {_options.MaxTenantVCpus}.");
        }
    }

    /// <summary>Hands a restored, booted or resumed guest its identity; the boot token stops working.</summary>
    private async Task SetIdentityAsync(HttpClient http, string id, string bootToken, string token, IReadOnlyDictionary<string, string>? env, bool ownKernel, CancellationToken cancellationToken)
    {
        var client = new EnvdClient(http, new EnvdClientOptions { BaseAddress = SandboxConnector.BaseUri(id, EnvdProtocol.Port), AccessToken = bootToken, UseBinaryFormat = true });

        // A container shares the host's kernel, clock and random pool (and may not set them): it gets only its token.
        var request = ownKernel
            ? new Airlock.Envd.Protocol.Agent.SetIdentityRequest
            {
                AccessToken = token,
                Hostname = "sandbox",
                MachineId = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16)),
                Entropy = Google.Protobuf.ByteString.CopyFrom(System.Security.Cryptography.RandomNumberGenerator.GetBytes(64)),
                UnixTimeNs = (_time.GetUtcNow() - DateTimeOffset.UnixEpoch).Ticks * 100,
                ReplaceEnvs = env is not null,
            }
            : new Airlock.Envd.Protocol.Agent.SetIdentityRequest { AccessToken = token, ReplaceEnvs = env is not null };
        if (env is not null)
        {
            foreach (var (name, value) in env)
            {
                request.Envs[name] = value;
            }
        }

        await client.SetIdentityAsync(request, cancellationToken);
    }

    /// <summary>
    /// POST /sandboxes/{id}/pause: 409 when already paused, 404 when gone, 507 when the disk is full. A microVM always
    /// goes to disk with its memory. A container is frozen in place by default (<paramref name="mode"/> null or
    /// "memory": processes and memory kept, memory stays reserved) or, with "disk", stopped with its files kept (no CRIU
    /// here, so its processes do not survive; the audit and the resumed sandbox say so).
    /// </summary>
    public async Task PauseAsync(string tenantId, string sandboxId, string? mode, CancellationToken cancellationToken)
    {
        if (mode is not (null or "memory" or "disk"))
        {
            throw ApiProblem.BadRequest("invalid_mode", $"mode must be 'memory' or 'disk', got '{mode}'.");
        }

        var record = await GetAsync(tenantId, sandboxId, cancellationToken);
        if (record.State is SandboxState.Paused or SandboxState.Pausing)
        {
            throw new ApiProblem(409, "sandbox_paused", $"Sandbox {sandboxId} is already {record.State.ToString().ToLowerInvariant()}.");
        }

        var live = await GetLiveAsync(tenantId, sandboxId, cancellationToken);
        if (live.Record.Boundary == BoundaryKind.Container && mode != "disk" && live.Instance is IFreezableInstance)
        {
            await FreezeLiveAsync(live, "requested", cancellationToken);
            return;
        }

        if (_drivers[live.Record.Boundary] is not IPausableDriver)
        {
            throw new ApiProblem(409, "pause_unsupported", $"Sandbox {sandboxId} runs in the {live.Record.Boundary.Name()} boundary, which cannot pause; microvm and container sandboxes can.");
        }

        await PauseLiveAsync(live, "requested", cancellationToken);
    }

    /// <summary>Freezes a container in place: its cgroup's freezer stops every process; memory and network stay.</summary>
    private async Task FreezeLiveAsync(LiveSandbox live, string why, CancellationToken cancellationToken)
    {
        var id = live.Record.SandboxId;
        await live.Gate.WaitAsync(cancellationToken);
        try
        {
            if (live.Ending || live.Pausing || live.Frozen)
            {
                throw new ApiProblem(409, "sandbox_busy", $"Sandbox {id} is already pausing, paused or ending.");
            }

            var now = _time.GetUtcNow();
            var usage = Meter(live, now);
            await ((IFreezableInstance)live.Instance).FreezeAsync(cancellationToken);
            live.Frozen = true;
            live.TimeoutTimer?.Dispose();
            live.Record = live.Record with { State = SandboxState.Paused, PausedAt = now, Usage = usage with { MeteredAt = now } };
            await _store.UpdateSandboxAsync(live.Record, CancellationToken.None);
            await AuditAsync(AuditKinds.Pause, live.Record, AuditJson.Object(("reason", why), ("kept", "memory and processes, frozen in place (memory stays reserved)")), CancellationToken.None);
            ServerLog.SandboxEnded(_logger, id, $"frozen ({why})");
        }
        finally
        {
            live.Gate.Release();
        }
    }

    private async Task PauseLiveAsync(LiveSandbox live, string why, CancellationToken cancellationToken)
    {
        var pausable = (IPausableDriver)_drivers[live.Record.Boundary];
        var id = live.Record.SandboxId;
        await live.Gate.WaitAsync(cancellationToken);
        try
        {
            if (live.Ending || live.Pausing)
            {
                throw new ApiProblem(409, "sandbox_busy", $"Sandbox {id} is already pausing or ending.");
            }

            live.Pausing = true;
            live.TimeoutTimer?.Dispose();
            live.Record = live.Record with { State = SandboxState.Pausing };
            await _store.UpdateSandboxAsync(live.Record, CancellationToken.None);
            var stopwatch = Stopwatch.StartNew();
            var usage = Meter(live, _time.GetUtcNow());
            try
            {
                await pausable.PauseAsync(live.Instance, keepMemory: pausable.CanKeepMemory, cancellationToken);
            }
            catch (Exception ex)
            {
                live.Pausing = false;
                var alive = !live.Instance.Exited.IsCompleted;
                live.Record = live.Record with { State = SandboxState.Running };
                await _store.UpdateSandboxAsync(live.Record, CancellationToken.None);
                await AuditAsync(AuditKinds.PauseFailed, live.Record, AuditJson.Object(("reason", ex.Message), ("stillRunning", alive)), CancellationToken.None);
                Arm(live);
                if (!alive)
                {
                    _ = EndAsync(live, SandboxState.Failed, $"lost while pausing: {ex.Message}", AuditKinds.Failed, CancellationToken.None);
                }

                throw ex is IOException
                    ? new ApiProblem(507, "pause_failed", $"Sandbox {id} could not be paused and keeps running: {ex.Message}")
                    : new ApiProblem(500, "pause_failed", $"Sandbox {id} could not be paused{(alive ? " and keeps running" : "")}: {ex.Message}");
            }

            _connector.Unregister(id);
            await live.Instance.DisposeAsync();
            if (live.Record.Network is { } net)
            {
                await DeleteNetworkAsync(id, net);
            }

            var now = _time.GetUtcNow();
            live.Record = live.Record with
            {
                State = SandboxState.Paused,
                PausedAt = now,
                HostPid = null,
                Network = null,
                Usage = usage with { MeteredAt = now },
            };
            await _store.UpdateSandboxAsync(live.Record, CancellationToken.None);
            _live.TryRemove(id, out _);
            var bytes = pausable.PausedBytes(Path.Combine(SandboxesDir, id));
            // Honest about what a pause keeps: a microVM's memory too; a container only its files (no CRIU here).
            var kept = live.Record.Boundary == BoundaryKind.MicroVm ? "memory and disk" : "filesystem only; processes were stopped";
            await AuditAsync(AuditKinds.Pause, live.Record, AuditJson.Object(("reason", why), ("kept", kept), ("bytesOnDisk", bytes), ("milliseconds", stopwatch.ElapsedMilliseconds)), CancellationToken.None);
            ServerLog.SandboxEnded(_logger, id, $"paused ({why}) in {stopwatch.ElapsedMilliseconds} ms, {bytes} bytes on disk");
        }
        finally
        {
            live.Gate.Release();
        }
    }

    private readonly ConcurrentDictionary<string, SemaphoreSlim> _resumeGates = new(StringComparer.Ordinal);

    /// <summary>Resume or connect: a running sandbox is returned as is (false); a paused one is restored (true).</summary>
    public async Task<(SandboxCreated Sandbox, bool Resumed)> ResumeAsync(string tenantId, string sandboxId, ResumeRequest request, CancellationToken cancellationToken)
    {
        var gate = _resumeGates.GetOrAdd(sandboxId, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken);
        try
        {
            var record = await GetAsync(tenantId, sandboxId, cancellationToken);
            if (_live.TryGetValue(sandboxId, out var frozen) && frozen.Frozen && !frozen.Ending)
            {
                return (await ThawAsync(frozen, request, cancellationToken), true);
            }

            if (_live.TryGetValue(sandboxId, out var running) && !running.Ending && !running.Pausing)
            {
                if (request.Timeout is { } extend)
                {
                    await SetTimeoutAsync(tenantId, sandboxId, extend, cancellationToken);
                }

                return (Created(running.Record), false);
            }

            if (record.State != SandboxState.Paused)
            {
                throw ApiProblem.NotFound("sandbox_not_found", record.State.IsTerminal()
                    ? $"Sandbox {sandboxId} is {record.State.ToString().ToLowerInvariant()} and cannot be resumed."
                    : $"Sandbox {sandboxId} is {record.State.ToString().ToLowerInvariant()}; try again.");
            }

            var timeout = ValidateTimeout(request.Timeout ?? _options.DefaultTimeoutSeconds);
            CheckTenantQuota(tenantId, record.Limits);
            var pausable = _drivers[record.Boundary] as IPausableDriver ?? throw new ApiProblem(409, "pause_unsupported", $"Sandbox {sandboxId} cannot be resumed by this node.");
            var stateDir = Path.Combine(SandboxesDir, sandboxId);
            var stopwatch = Stopwatch.StartNew();
            var now = _time.GetUtcNow();
            var usage = MeterPaused(record, pausable, now);
            record = record with { State = SandboxState.Resuming, Usage = usage };
            await _store.UpdateSandboxAsync(record, cancellationToken);
            SandboxNetwork? network = null;
            ISandboxInstance? instance = null;
            try
            {
                network = await _network.CreateAsync(sandboxId, NetworkPolicy.DenyAll, cancellationToken);
                var launch = new SandboxLaunch
                {
                    SandboxId = sandboxId,
                    TemplateId = record.TemplateId,
                    RootFs = "",
                    StateDir = stateDir,
                    AccessToken = record.AccessToken ?? throw new InvalidOperationException("the paused sandbox's access token is missing"),
                    Limits = record.Limits,
                    Network = network,
                    EnvVars = record.EnvVars,
                    GuestAgentPath = _guestAgentPath,
                    KeepOnShutdown = _options.KeepSandboxesOnShutdown,
                };
                instance = await pausable.ResumeAsync(launch, record.Report ?? throw new InvalidOperationException("the paused sandbox has no boundary report"), cancellationToken);
                _connector.Register(sandboxId, network);
                // The clock jumped while it slept, and clones must not share the random pool: refresh before use.
                await SetIdentityWhenReadyAsync(sandboxId, instance, instance.BootToken ?? launch.AccessToken, launch.AccessToken, env: null, cancellationToken);
            }
            catch (Exception ex)
            {
                _connector.Unregister(sandboxId);
                if (instance is not null)
                {
                    await instance.DisposeAsync();
                }

                if (network is not null)
                {
                    await DeleteNetworkAsync(sandboxId, network);
                }

                // The saved state is only deleted by a successful resume: the sandbox stays paused and can be tried again.
                var keep = pausable.HasPausedState(stateDir);
                record = keep
                    ? record with { State = SandboxState.Paused }
                    : record with { State = SandboxState.Failed, FailureReason = $"resume failed: {ex.Message}", AccessToken = null };
                await _store.UpdateSandboxAsync(record, CancellationToken.None);
                await AuditAsync(AuditKinds.Failed, record, AuditJson.Object(("reason", $"resume failed: {ex.Message}"), ("stillPaused", keep)), CancellationToken.None);
                throw ex is ApiProblem or OperationCanceledException ? ex : new ApiProblem(500, "resume_failed", $"Sandbox {sandboxId} could not be resumed{(keep ? " (it stays paused)" : "")}: {ex.Message}");
            }

            now = _time.GetUtcNow();
            record = record with
            {
                State = SandboxState.Running,
                PausedAt = null,
                Network = network,
                HostPid = instance.HostPid,
                EndAt = now.AddSeconds(timeout),
                Report = record.Report with { StartedFrom = instance.Report.StartedFrom },
                OnTimeout = request.AutoPause is { } auto ? (auto ? "pause" : "kill") : record.OnTimeout,
                Usage = record.Usage with { MeteredAt = now },
            };
            await _store.UpdateSandboxAsync(record, CancellationToken.None);
            pausable.DiscardPausedState(stateDir);
            var live = new LiveSandbox(record, instance);
            _live[sandboxId] = live;
            Arm(live);
            Watch(live);
            await AuditAsync(AuditKinds.Resume, record, AuditJson.Object(("milliseconds", stopwatch.ElapsedMilliseconds), ("timeoutSeconds", timeout)), CancellationToken.None);
            ServerLog.SandboxStarted(_logger, sandboxId, record.Boundary.Name(), "resumed", stopwatch.ElapsedMilliseconds);
            return (Created(record), true);
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>Lets a frozen container run again, with a new timeout; its processes continue where they stopped.</summary>
    private async Task<SandboxCreated> ThawAsync(LiveSandbox live, ResumeRequest request, CancellationToken cancellationToken)
    {
        var timeout = ValidateTimeout(request.Timeout ?? _options.DefaultTimeoutSeconds);
        await live.Gate.WaitAsync(cancellationToken);
        try
        {
            var stopwatch = Stopwatch.StartNew();
            await ((IFreezableInstance)live.Instance).ThawAsync(cancellationToken);
            live.Frozen = false;
            var now = _time.GetUtcNow();
            live.Record = live.Record with
            {
                State = SandboxState.Running,
                PausedAt = null,
                EndAt = now.AddSeconds(timeout),
                OnTimeout = request.AutoPause is { } auto ? (auto ? "pause" : "kill") : live.Record.OnTimeout,
                Report = live.Record.Report! with { StartedFrom = "thawed: processes and memory kept" },
            };
            await _store.UpdateSandboxAsync(live.Record, CancellationToken.None);
            Arm(live);
            await AuditAsync(AuditKinds.Resume, live.Record, AuditJson.Object(("milliseconds", stopwatch.ElapsedMilliseconds), ("timeoutSeconds", timeout), ("thawed", true)), CancellationToken.None);
            return Created(live.Record);
        }
        finally
        {
            live.Gate.Release();
        }
    }

    private SandboxCreated Created(SandboxRecord record) => new()
    {
        SandboxId = record.SandboxId,
        TemplateId = record.TemplateId,
        EnvdVersion = EnvdProtocol.Version,
        EnvdAccessToken = record.AccessToken ?? "",
        Domain = _options.Domain,
        Boundary = record.Report!,
    };

    private async Task DeleteNetworkAsync(string id, SandboxNetwork network)
    {
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await _network.DeleteAsync(network, cts.Token);
        }
        catch (Exception ex)
        {
            ServerLog.CleanupFailed(_logger, ex, id);
        }
    }

    /// <summary>Usage of a running sandbox brought up to <paramref name="now"/> (reserved vCPU/memory time, CPU used).</summary>
    private SandboxUsage Meter(LiveSandbox live, DateTimeOffset now)
    {
        var usage = live.Record.Usage;
        if (live.Record.State is SandboxState.Paused)
        {
            return usage;
        }

        var since = usage.MeteredAt ?? live.Record.CreatedAt;
        var seconds = Math.Max(0, (now - since).TotalSeconds);
        var cpu = live.Instance.CpuUsed;
        var cpuDelta = 0.0;
        if (cpu is { } used)
        {
            cpuDelta = Math.Max(0, (used - live.CpuMetered).TotalSeconds);
            live.CpuMetered = used;
        }

        return usage with
        {
            RunningSeconds = usage.RunningSeconds + seconds,
            VCpuSeconds = usage.VCpuSeconds + seconds * live.Record.Limits.VCpus,
            MemoryGiBSeconds = usage.MemoryGiBSeconds + seconds * live.Record.Limits.MemoryMiB / 1024.0,
            CpuSeconds = usage.CpuSeconds + cpuDelta,
            MeteredAt = now,
        };
    }

    /// <summary>Usage of a paused sandbox brought up to <paramref name="now"/>: the GiB it keeps on disk × hours.</summary>
    private SandboxUsage MeterPaused(SandboxRecord record, IPausableDriver pausable, DateTimeOffset now)
    {
        var since = record.Usage.MeteredAt ?? record.PausedAt ?? now;
        var hours = Math.Max(0, (now - since).TotalHours);
        var gib = pausable.PausedBytes(Path.Combine(SandboxesDir, record.SandboxId)) / (double)(1L << 30);
        return record.Usage with { PausedGiBHours = record.Usage.PausedGiBHours + hours * gib, MeteredAt = now };
    }

    /// <summary>GET /usage: every sandbox of the tenant (running, paused and ended), metered up to now.</summary>
    public async Task<UsageReport> UsageAsync(string tenantId, CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        var items = new List<SandboxUsageItem>();
        foreach (var record in await _store.ListSandboxesAsync(tenantId, null, cancellationToken))
        {
            var usage = record.Usage;
            if (_live.TryGetValue(record.SandboxId, out var live) && !live.Ending && !live.Pausing)
            {
                var cpuBefore = live.CpuMetered;
                usage = Meter(live, now);
                live.CpuMetered = cpuBefore; // a read does not move the meter
            }
            else if (record.State == SandboxState.Paused && _drivers[record.Boundary] is IPausableDriver pausable)
            {
                usage = MeterPaused(record, pausable, now);
            }

            items.Add(new SandboxUsageItem { SandboxId = record.SandboxId, State = record.State.ToString().ToLowerInvariant(), Boundary = record.Boundary.Name(), Usage = usage });
        }

        var total = new SandboxUsage
        {
            RunningSeconds = items.Sum(i => i.Usage.RunningSeconds),
            VCpuSeconds = items.Sum(i => i.Usage.VCpuSeconds),
            MemoryGiBSeconds = items.Sum(i => i.Usage.MemoryGiBSeconds),
            CpuSeconds = items.Sum(i => i.Usage.CpuSeconds),
            PausedGiBHours = items.Sum(i => i.Usage.PausedGiBHours),
            MeteredAt = now,
        };
        return new UsageReport { TenantId = tenantId, At = now, Total = total, Sandboxes = items };
    }

    private ITimer? _reaper;

    /// <summary>Starts the periodic reaper (expired paused sandboxes) and meter (usage of running ones).</summary>
    public void StartReaper() =>
        _reaper = _time.CreateTimer(_ => _ = ReapAsync(CancellationToken.None), null, _options.ReaperInterval, _options.ReaperInterval);

    /// <summary>One reaper pass: deletes paused sandboxes older than the retention (audited) and persists usage.</summary>
    public async Task<IReadOnlyList<string>> ReapAsync(CancellationToken cancellationToken)
    {
        var reaped = new List<string>();
        try
        {
            var now = _time.GetUtcNow();
            foreach (var listed in await _store.ListSandboxesAsync(null, [SandboxState.Paused], cancellationToken))
            {
                if (_drivers[listed.Boundary] is not IPausableDriver pausable)
                {
                    continue;
                }

                // Under the resume gate, re-read: a resume or kill that got there first wins, and is never overwritten.
                var gate = _resumeGates.GetOrAdd(listed.SandboxId, _ => new SemaphoreSlim(1, 1));
                await gate.WaitAsync(cancellationToken);
                try
                {
                    if (await _store.GetSandboxAnyTenantAsync(listed.SandboxId, cancellationToken) is not { State: SandboxState.Paused } record)
                    {
                        continue;
                    }

                    var metered = record with { Usage = MeterPaused(record, pausable, now) };
                    if (record.PausedAt is not { } paused || now - paused < _options.PausedRetention)
                    {
                        await _store.UpdateSandboxAsync(metered, cancellationToken);
                        continue;
                    }

                    var stateDir = Path.Combine(SandboxesDir, record.SandboxId);
                    var bytes = pausable.PausedBytes(stateDir);
                    await _drivers[record.Boundary].CleanupAsync(record.SandboxId, stateDir, cancellationToken);
                    var ended = metered with { State = SandboxState.Killed, AccessToken = null, EndAt = now, FailureReason = null };
                    await _store.UpdateSandboxAsync(ended, cancellationToken);
                    await AuditAsync(AuditKinds.Reaped, ended, AuditJson.Object(
                        ("reason", $"paused for longer than the retention of {_options.PausedRetention}"),
                        ("pausedAt", paused), ("bytesFreed", bytes)), cancellationToken);
                    reaped.Add(record.SandboxId);
                    ServerLog.SandboxEnded(_logger, record.SandboxId, "reaped after the paused retention");
                }
                finally
                {
                    gate.Release();
                }
            }

            foreach (var live in _live.Values.ToList())
            {
                if (live.Frozen && !live.Ending && live.Record.PausedAt is { } frozenAt && now - frozenAt >= _options.PausedRetention)
                {
                    await EndAsync(live, SandboxState.Killed, $"paused (frozen) for longer than the retention of {_options.PausedRetention}", AuditKinds.Reaped, cancellationToken);
                    reaped.Add(live.Record.SandboxId);
                    continue;
                }

                await live.Gate.WaitAsync(cancellationToken);
                try
                {
                    if (!live.Ending && !live.Pausing)
                    {
                        live.Record = live.Record with { Usage = Meter(live, now) };
                        await _store.UpdateSandboxAsync(live.Record, cancellationToken);
                    }
                }
                finally
                {
                    live.Gate.Release();
                }
            }
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            ServerLog.Unexpected(_logger, ex, "reaper");
        }

        return reaped;
    }

    private async Task<(BoundaryKind Boundary, Risk Risk, string? Downgrade)> ChooseBoundaryAsync(NewSandboxRequest request, CancellationToken cancellationToken)
    {
        var risk = _options.DefaultRisk;
        if (request.Risk is not null && !BoundaryMapping.TryParseRisk(request.Risk, out risk))
        {
            throw ApiProblem.BadRequest("invalid_risk", $"risk must be low, medium or high, got '{request.Risk}'.");
        }

        var required = BoundaryMapping.ForRisk(risk);
        var allowDowngrade = request.AllowDowngrade == true;
        var target = required;
        if (request.Boundary is not null)
        {
            if (!BoundaryMapping.TryParse(request.Boundary, out target))
            {
                throw ApiProblem.BadRequest("invalid_boundary", $"boundary must be process, container or microvm, got '{request.Boundary}'.");
            }

            if (request.Risk is null && target < required)
            {
                // Naming a boundary without a risk class asks for exactly that boundary.
                required = target;
            }

            if (target < required && !allowDowngrade)
            {
                throw ApiProblem.BadRequest("boundary_too_weak", $"risk '{risk.ToString().ToLowerInvariant()}' requires the {required.Name()} boundary; {target.Name()} is weaker. Set allowDowngrade to consent.");
            }
        }

        var availability = await _drivers[target].ProbeAsync(cancellationToken);
        if (availability.Available)
        {
            return (target, risk, target < required ? $"requested {required.Name()}, caller consented to {target.Name()}" : null);
        }

        ServerLog.BoundaryUnavailable(_logger, target.Name(), availability.Detail);
        if (allowDowngrade)
        {
            for (var weaker = target - 1; weaker >= BoundaryKind.Process; weaker--)
            {
                if (_drivers.TryGetValue(weaker, out var driver) && (await driver.ProbeAsync(cancellationToken)).Available)
                {
                    return (weaker, risk, $"{target.Name()} unavailable ({availability.Detail}); caller allowed downgrade to {weaker.Name()}");
                }
            }
        }

        var missing = availability.Missing.Count > 0 ? $" Missing: {string.Join("; ", availability.Missing)}." : "";
        throw new ApiProblem(422, "boundary_unavailable", $"The {target.Name()} boundary is not available on this host: {availability.Detail}.{missing} Airlock never picks a weaker boundary silently; ask for a weaker risk class or set allowDowngrade.");
    }

    private int ValidateTimeout(int seconds) =>
        seconds <= 0 || seconds > _options.MaxTimeoutSeconds
            ? throw ApiProblem.BadRequest("invalid_timeout", $"timeout must be between 1 and {_options.MaxTimeoutSeconds} seconds, got {seconds}.")
            : seconds;

    private SandboxLimits ValidateLimits(NewSandboxRequest request)
    {
        var limits = _options.DefaultLimits;
        if (request.MemoryMB is { } memory)
        {
            if (memory < 64 || memory > _options.MaxMemoryMiB)
            {
                throw ApiProblem.BadRequest("invalid_memory", $"memoryMB must be between 64 and {_options.MaxMemoryMiB}, got {memory}.");
            }

            limits = limits with { MemoryMiB = memory };
        }

        if (request.CpuCount is { } cpus)
        {
            if (cpus < 1 || cpus > _options.MaxCpuCount)
            {
                throw ApiProblem.BadRequest("invalid_cpu_count", $"cpuCount must be between 1 and {_options.MaxCpuCount}, got {cpus}.");
            }

            limits = limits with { CpuMillis = cpus * 1000, VCpus = cpus };
        }

        if (request.DiskMB is { } disk)
        {
            if (disk < 64 || disk > _options.MaxDiskMiB)
            {
                throw ApiProblem.BadRequest("invalid_disk", $"diskMB must be between 64 and {_options.MaxDiskMiB}, got {disk}.");
            }

            limits = limits with { DiskMiB = disk };
        }

        return limits;
    }

    private static Dictionary<string, string> ValidateEnv(Dictionary<string, string>? env)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, value) in env ?? [])
        {
            if (name.Length is 0 or > 256 || name.Contains('=', StringComparison.Ordinal) || name.Contains('\0', StringComparison.Ordinal) || name.StartsWith("AIRLOCK_", StringComparison.Ordinal))
            {
                throw ApiProblem.BadRequest("invalid_env", $"envVars name '{name}' is not allowed.");
            }

            if (value is null || value.Contains('\0', StringComparison.Ordinal) || value.Length > 32 * 1024)
            {
                throw ApiProblem.BadRequest("invalid_env", $"envVars value for '{name}' is not allowed (NUL byte or longer than 32 KiB).");
            }

            result[name] = value;
        }

        return result.Count > 128 ? throw ApiProblem.BadRequest("invalid_env", "at most 128 envVars.") : result;
    }

    private static Dictionary<string, string> ValidateMetadata(Dictionary<string, string>? metadata)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in metadata ?? [])
        {
            if (key.Length is 0 or > 256 || value is null || value.Length > 4096)
            {
                throw ApiProblem.BadRequest("invalid_metadata", $"metadata key '{key}' or its value is invalid (key 1-256 chars, value at most 4096).");
            }

            result[key] = value;
        }

        return result.Count > 64 ? throw ApiProblem.BadRequest("invalid_metadata", "at most 64 metadata entries.") : result;
    }

    public static bool ValidId(string id) => id.Length == 20 && id.All(c => c is >= 'a' and <= 'z' or >= '0' and <= '9');

    private static string NewSandboxId()
    {
        const string alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
        return string.Create(20, 0, static (span, _) =>
        {
            for (var i = 0; i < span.Length; i++)
            {
                span[i] = alphabet[System.Security.Cryptography.RandomNumberGenerator.GetInt32(alphabet.Length)];
            }
        });
    }

    /// <summary>Startup reconcile: re-adopt what survived, clean what did not, record every action.</summary>
    public async Task<IReadOnlyList<string>> ReconcileAsync(CancellationToken cancellationToken)
    {
        var actions = new List<string>();
        var adopted = new HashSet<string>(StringComparer.Ordinal);
        var kept = new HashSet<string>(StringComparer.Ordinal); // paused: state on disk, nothing running
        foreach (var stored in await _store.ListSandboxesAsync(null, LiveStates, cancellationToken))
        {
            var record = stored;
            var stateDir = Path.Combine(SandboxesDir, record.SandboxId);
            ISandboxInstance? instance = null;
            // Paused with a network: a container frozen in place (a microVM paused to disk keeps no network).
            if (record.State is SandboxState.Running or SandboxState.Pausing or SandboxState.Resuming or SandboxState.Paused && record.Network is { } net && record.AccessToken is { } token && _drivers.TryGetValue(record.Boundary, out var driver))
            {
                var launch = new SandboxLaunch
                {
                    SandboxId = record.SandboxId,
                    TemplateId = record.TemplateId,
                    RootFs = "",
                    StateDir = stateDir,
                    AccessToken = token,
                    Limits = record.Limits,
                    Network = net,
                    EnvVars = record.EnvVars,
                    GuestAgentPath = _guestAgentPath,
                    KeepOnShutdown = true,
                };
                try
                {
                    instance = await driver.AdoptAsync(record, launch, cancellationToken);
                    if (instance is not null && record.State == SandboxState.Paused && instance is IFreezableInstance)
                    {
                        _connector.Register(record.SandboxId, net); // frozen: its agent answers once thawed
                    }
                    else if (instance is not null)
                    {
                        _connector.Register(record.SandboxId, net);
                        using var health = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                        using var linked = CancellationTokenSource.CreateLinkedTokenSource(health.Token, cancellationToken);
                        await WaitForAgentAsync(record.SandboxId, token, instance, linked.Token);
                    }
                }
                catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
                {
                    actions.Add($"sandbox {record.SandboxId}: could not re-adopt ({ex.Message})");
                    _connector.Unregister(record.SandboxId);
                    if (instance is not null)
                    {
                        await instance.DisposeAsync();
                    }

                    instance = null;
                }
            }

            if (instance is not null && record.State == SandboxState.Paused && instance is IFreezableInstance)
            {
                // A container frozen in place outlived airlockd: it stays paused, frozen, and is ours again.
                _live[record.SandboxId] = new LiveSandbox(record with { HostPid = instance.HostPid }, instance) { Frozen = true };
                adopted.Add(record.SandboxId);
                actions.Add($"sandbox {record.SandboxId}: re-adopted frozen (pid {instance.HostPid})");
                continue;
            }

            if (instance is not null)
            {
                if (record.State != SandboxState.Running)
                {
                    // Caught mid-pause or mid-resume with the VM still up: it is running, whatever the store said.
                    record = record with { State = SandboxState.Running, PausedAt = null };
                    await _store.UpdateSandboxAsync(record, cancellationToken);
                }

                var live = new LiveSandbox(record with { HostPid = instance.HostPid }, instance);
                _live[record.SandboxId] = live;
                Arm(live);
                Watch(live);
                adopted.Add(record.SandboxId);
                actions.Add($"sandbox {record.SandboxId}: re-adopted (pid {instance.HostPid})");
                continue;
            }

            if (record.State is SandboxState.Paused or SandboxState.Pausing or SandboxState.Resuming
                && _drivers.TryGetValue(record.Boundary, out var owner) && owner is IPausableDriver pausable && pausable.HasPausedState(stateDir))
            {
                // Its saved state is complete on disk: it stays paused (a VMM left mid-pause or mid-resume is stopped).
                if (record.Network is { } stale)
                {
                    await DeleteNetworkAsync(record.SandboxId, stale);
                }

                var paused = record with { State = SandboxState.Paused, PausedAt = record.PausedAt ?? _time.GetUtcNow(), Network = null, HostPid = null };
                await _store.UpdateSandboxAsync(paused, cancellationToken);
                kept.Add(record.SandboxId);
                actions.Add($"sandbox {record.SandboxId}: was {record.State.ToString().ToLowerInvariant()}, kept paused");
                continue;
            }

            await CleanupAsync(record.SandboxId, record.Boundary, null, record.Network, stateDir);
            var failed = record with { State = SandboxState.Failed, FailureReason = "lost while airlockd was down", AccessToken = null, HostPid = null };
            await _store.UpdateSandboxAsync(failed, cancellationToken);
            await AuditAsync(AuditKinds.Failed, failed, AuditJson.Object(("reason", failed.FailureReason)), cancellationToken);
            actions.Add($"sandbox {record.SandboxId}: was {record.State.ToString().ToLowerInvariant()}, cleaned and marked failed");
        }

        // Only what belongs to this data directory is ours to clean: ids this store has ever known or that have a
        // state directory here. Another airlockd on the same host (another data dir) keeps its sandboxes.
        var ours = new HashSet<string>(StringComparer.Ordinal);
        foreach (var record in await _store.ListSandboxesAsync(null, null, cancellationToken))
        {
            ours.Add(record.SandboxId);
        }

        if (Directory.Exists(SandboxesDir))
        {
            ours.UnionWith(Directory.EnumerateDirectories(SandboxesDir).Select(Path.GetFileName).OfType<string>());
        }

        var leftovers = new HashSet<string>(StringComparer.Ordinal);
        foreach (var driver in _drivers.Values)
        {
            foreach (var id in await driver.FindLeftoversAsync(cancellationToken))
            {
                if (ours.Contains(id) && !adopted.Contains(id) && kept.Contains(id) && driver is IPausableDriver)
                {
                    // A paused sandbox's VMM caught mid-pause: stop it, keep the state directory.
                    foreach (var line in await driver.CleanupAsync(id, Path.Combine(SandboxesDir, id, ".no-state"), cancellationToken))
                    {
                        actions.Add($"paused {id}: {line}");
                    }
                }
                else if (ours.Contains(id) && !adopted.Contains(id) && !kept.Contains(id) && leftovers.Add(id))
                {
                    foreach (var line in await driver.CleanupAsync(id, Path.Combine(SandboxesDir, id), cancellationToken))
                    {
                        actions.Add($"orphan {id}: {line}");
                    }
                }
            }
        }

        foreach (var id in await _network.FindLeftoversAsync(cancellationToken))
        {
            if (ours.Contains(id) && !adopted.Contains(id) && !_live.ContainsKey(id))
            {
                await _network.DeleteLeftoverAsync(id, cancellationToken);
                actions.Add($"orphan {id}: network namespace and link removed");
            }
        }

        if (Directory.Exists(SandboxesDir))
        {
            foreach (var dir in Directory.EnumerateDirectories(SandboxesDir))
            {
                var id = Path.GetFileName(dir);
                if (!adopted.Contains(id) && !kept.Contains(id) && !_live.ContainsKey(id))
                {
                    foreach (var driver in _drivers.Values)
                    {
                        await driver.CleanupAsync(id, dir, cancellationToken);
                    }

                    if (Directory.Exists(dir))
                    {
                        Directory.Delete(dir, recursive: true);
                    }

                    actions.Add($"orphan {id}: state directory removed");
                }
            }
        }

        foreach (var action in actions)
        {
            ServerLog.Reconciled(_logger, action);
        }

        await _audit.AppendAsync(new AuditEntry(AuditKinds.Reconcile, null, null, AuditJson.Object(("actions", actions))), cancellationToken);
        return actions;
    }

    /// <summary>Graceful shutdown: kill every sandbox, or detach them for re-adoption when configured to keep them.</summary>
    public async Task ShutdownAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync();
        if (_reaper is not null)
        {
            await _reaper.DisposeAsync();
        }

        var all = _live.Values.ToList();
        if (_options.KeepSandboxesOnShutdown)
        {
            foreach (var live in all)
            {
                live.TimeoutTimer?.Dispose();
                await live.Instance.DetachAsync();
            }

            ServerLog.Shutdown(_logger, all.Count, "kept running");
            return;
        }

        // A frozen container would die with airlockd: keep what can be kept (its files) as a pause to disk.
        foreach (var frozen in all.Where(l => l.Frozen && !l.Ending))
        {
            try
            {
                await PauseLiveAsync(frozen, "airlockd shutdown while frozen", cancellationToken);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                ServerLog.Unexpected(_logger, ex, "pause to disk of a frozen sandbox at shutdown; killing it");
            }
        }

        all = _live.Values.ToList();
        await Task.WhenAll(all.Select(live => EndAsync(live, SandboxState.Killed, "airlockd shutdown", AuditKinds.Kill, cancellationToken)));
        ServerLog.Shutdown(_logger, all.Count, "killed");
    }

    public async ValueTask DisposeAsync()
    {
        if (!_stopping.IsCancellationRequested)
        {
            await ShutdownAsync(CancellationToken.None);
        }

        _stopping.Dispose();
    }
}
