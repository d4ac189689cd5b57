using Airlock.Core.Sandboxes;
using Airlock.Core.Storage;

namespace Airlock.Sandboxes.Policy;

/// <summary>The quota one sandbox holds; disposing it (the sandbox ended, paused to disk, or never started) gives it back.</summary>
public sealed class QuotaReservation : IDisposable
{
    private readonly QuotaLedger? _ledger;
    private int _released;

    internal QuotaReservation(QuotaLedger? ledger, string tenantId, string sandboxId, SandboxLimits limits)
    {
        _ledger = ledger;
        TenantId = tenantId;
        SandboxId = sandboxId;
        Limits = limits;
    }

    /// <summary>A reservation that holds nothing (tests, or a sandbox that holds no quota).</summary>
    public static QuotaReservation None(string tenantId, string sandboxId) => new(null, tenantId, sandboxId, new SandboxLimits()) { _released = 1 };

    public string TenantId { get; }

    public string SandboxId { get; }

    public SandboxLimits Limits { get; }

    public bool Released => Volatile.Read(ref _released) != 0;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0)
        {
            _ledger?.Release(this);
        }
    }
}

/// <summary>
/// Per-tenant admission counters: sandboxes, memory and vCPUs held by sandboxes that are starting, running, resuming or
/// frozen in place. Check and reserve happen under one lock, so concurrent creates cannot all pass a check made against
/// what is merely running (the race the first lifecycle had: 12 creates of 2 vCPUs all admitted against 8). The limits
/// are the server's per-tenant defaults, overridden field by field by a tenant's own stored quotas.
/// </summary>
public sealed class QuotaLedger(int maxSandboxes, int maxMemoryMiB, int maxVCpus)
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, (int Count, int MemoryMiB, int VCpus)> _tenants = new(StringComparer.Ordinal);
    private readonly Dictionary<string, TenantQuotas> _overrides = new(StringComparer.Ordinal);

    /// <summary>Sets (or, with null, clears) a tenant's own quotas; later admissions use them, sandboxes already in are kept.</summary>
    public void SetTenantQuotas(string tenantId, TenantQuotas? quotas)
    {
        lock (_lock)
        {
            if (quotas is null || quotas == TenantQuotas.None)
            {
                _overrides.Remove(tenantId);
            }
            else
            {
                _overrides[tenantId] = quotas;
            }
        }
    }

    /// <summary>The limits that apply to a tenant now: its own quotas over the server's defaults.</summary>
    public (int MaxSandboxes, int MaxMemoryMiB, int MaxVCpus) LimitsOf(string tenantId)
    {
        lock (_lock)
        {
            return LimitsOfLocked(tenantId);
        }
    }

    private (int MaxSandboxes, int MaxMemoryMiB, int MaxVCpus) LimitsOfLocked(string tenantId) =>
        _overrides.TryGetValue(tenantId, out var own)
            ? (own.MaxSandboxes ?? maxSandboxes, own.MaxMemoryMiB ?? maxMemoryMiB, own.MaxVCpus ?? maxVCpus)
            : (maxSandboxes, maxMemoryMiB, maxVCpus);

    /// <summary>Reserves room for one sandbox or throws <see cref="SandboxException"/> (quota) with what is in use.</summary>
    public QuotaReservation Reserve(string tenantId, string sandboxId, SandboxLimits limits, bool force = false)
    {
        ArgumentNullException.ThrowIfNull(limits);
        lock (_lock)
        {
            var used = _tenants.GetValueOrDefault(tenantId);
            if (!force)
            {
                var (maxCount, maxMemory, maxCpus) = LimitsOfLocked(tenantId);
                if (used.Count + 1 > maxCount)
                {
                    throw SandboxException.Quota("quota_exceeded", $"Tenant already runs or starts {used.Count} sandboxes (limit {maxCount}).");
                }

                if (used.MemoryMiB + limits.MemoryMiB > maxMemory)
                {
                    throw SandboxException.Quota("memory_quota_exceeded", $"Tenant's sandboxes reserve {used.MemoryMiB} MiB; {limits.MemoryMiB} more would pass the tenant quota of {maxMemory} MiB.");
                }

                if (used.VCpus + limits.VCpus > maxCpus)
                {
                    throw SandboxException.Quota("cpu_quota_exceeded", $"Tenant's sandboxes reserve {used.VCpus} vCPUs; {limits.VCpus} more would pass the tenant quota of {maxCpus}.");
                }
            }

            _tenants[tenantId] = (used.Count + 1, used.MemoryMiB + limits.MemoryMiB, used.VCpus + limits.VCpus);
            return new QuotaReservation(this, tenantId, sandboxId, limits);
        }
    }

    /// <summary>What a tenant holds now.</summary>
    public (int Count, int MemoryMiB, int VCpus) InUse(string tenantId)
    {
        lock (_lock)
        {
            return _tenants.GetValueOrDefault(tenantId);
        }
    }

    internal void Release(QuotaReservation reservation)
    {
        lock (_lock)
        {
            var used = _tenants.GetValueOrDefault(reservation.TenantId);
            var next = (Math.Max(0, used.Count - 1), Math.Max(0, used.MemoryMiB - reservation.Limits.MemoryMiB), Math.Max(0, used.VCpus - reservation.Limits.VCpus));
            if (next.Item1 == 0)
            {
                _tenants.Remove(reservation.TenantId);
            }
            else
            {
                _tenants[reservation.TenantId] = next;
            }
        }
    }
}
