using Airlock.Core.Api;
using Airlock.Core.Sandboxes;
using Airlock.Envd;
using Airlock.Sandboxes;

namespace Airlock.Server.Api;

/// <summary>Between the wire (Airlock's and E2B's JSON) and the lifecycle's domain types; validation of wire-only shapes.</summary>
internal static class WireMapping
{
    public static SandboxSpec ToSpec(string tenantId, NewSandboxRequest request)
    {
        Risk? risk = null;
        if (request.Risk is not null)
        {
            risk = BoundaryMapping.TryParseRisk(request.Risk, out var r) ? r : throw ApiProblem.BadRequest("invalid_risk", $"risk must be low, medium or high, got '{request.Risk}'.");
        }

        BoundaryKind? boundary = null;
        if (request.Boundary is not null)
        {
            boundary = BoundaryMapping.TryParse(request.Boundary, out var b) ? b : throw ApiProblem.BadRequest("invalid_boundary", $"boundary must be process, container or microvm, got '{request.Boundary}'.");
        }

        // E2B's flat fields (autoPause, autoPauseMemory, autoResume.enabled) or Airlock's lifecycle object; not both.
        var lifecycle = request.Lifecycle;
        if (lifecycle is not null && (request.AutoPause is not null || request.AutoPauseMemory is not null || request.AutoResume is not null))
        {
            throw ApiProblem.BadRequest("invalid_lifecycle", "give either lifecycle or autoPause/autoPauseMemory/autoResume, not both.");
        }

        TimeoutAction? onTimeout = lifecycle?.OnTimeout switch
        {
            null => request.AutoPause switch { true => TimeoutAction.Pause, false => TimeoutAction.Kill, null => null },
            "kill" => TimeoutAction.Kill,
            "pause" => TimeoutAction.Pause,
            var other => throw ApiProblem.BadRequest("invalid_lifecycle", $"lifecycle.onTimeout must be 'kill' or 'pause', got '{other}'."),
        };
        var keepMemory = lifecycle is not null ? lifecycle.KeepMemory : request.AutoPauseMemory;
        if (keepMemory is not null && onTimeout != TimeoutAction.Pause)
        {
            throw ApiProblem.BadRequest("invalid_lifecycle", "keepMemory (autoPauseMemory) applies only with onTimeout 'pause'.");
        }

        return new SandboxSpec
        {
            TenantId = tenantId,
            TemplateId = string.IsNullOrWhiteSpace(request.TemplateId) ? "base" : request.TemplateId.Trim(),
            Risk = risk,
            Boundary = boundary,
            AllowDowngrade = request.AllowDowngrade == true,
            TimeoutSeconds = request.Timeout,
            Env = request.EnvVars ?? [],
            Metadata = request.Metadata ?? [],
            MemoryMiB = request.MemoryMB,
            CpuCount = request.CpuCount,
            DiskMiB = request.DiskMB,
            ColdBoot = request.Cold == true,
            OnTimeout = onTimeout,
            KeepMemory = keepMemory,
            AutoResume = lifecycle is not null ? lifecycle.AutoResume : request.AutoResume?.Enabled,
            Network = ToPolicy(request.Network),
            AllowInternetAccess = request.AllowInternetAccess,
        };
    }

    /// <summary>E2B's network object as a policy: nothing asked is deny-all; an allowlist is refused by the policy until the egress door exists.</summary>
    private static NetworkPolicy? ToPolicy(NetworkRequest? network)
    {
        if (network is null || (network.AllowOut is not { Count: > 0 } && network.AllowPublicTraffic is null))
        {
            return null;
        }

        return new NetworkPolicy
        {
            Allow = (network.AllowOut ?? []).Select(d => new EgressRule(d)).ToList(),
            Deny = (network.DenyOut ?? []).Select(d => new EgressRule(d)).ToList(),
            PublicIngress = network.AllowPublicTraffic == true,
        };
    }

    public static SandboxCreated ToCreated(SandboxHandle handle, AirlockServerOptions options) => new()
    {
        SandboxId = handle.Record.SandboxId,
        TemplateId = handle.Record.TemplateId,
        EnvdVersion = EnvdProtocol.Version,
        EnvdAccessToken = handle.AccessToken,
        Domain = options.Domain,
        Boundary = handle.Record.Report!,
    };

    public static SandboxDetail ToDetail(SandboxRecord r, AirlockServerOptions options, bool includeToken) => new()
    {
        SandboxId = r.SandboxId,
        TemplateId = r.TemplateId,
        StartedAt = r.CreatedAt,
        EndAt = r.EndAt,
        CpuCount = r.Limits.VCpus,
        MemoryMB = r.Limits.MemoryMiB,
        DiskSizeMB = r.Boundary == BoundaryKind.MicroVm ? 0 : r.Limits.DiskMiB,
        EnvdVersion = EnvdProtocol.Version,
        EnvdAccessToken = includeToken && r.State is SandboxState.Running or SandboxState.Unresponsive ? r.AccessToken : null,
        Domain = options.Domain,
        Metadata = r.Metadata,
        State = r.State is SandboxState.Unresponsive ? "running" : r.State.ToString().ToLowerInvariant(),
        Health = r.State switch { SandboxState.Unresponsive => "unresponsive", SandboxState.Running => "ok", _ => null },
        FailureReason = r.FailureReason,
        Boundary = r.Report,
        PausedAt = r.PausedAt,
        Lifecycle = new LifecycleInfo
        {
            OnTimeout = r.Lifecycle.OnTimeout == TimeoutAction.Pause ? "pause" : "kill",
            AutoResume = r.Lifecycle.AutoResume,
            KeepMemory = r.Lifecycle.KeepMemory,
        },
        AllowInternetAccess = !r.NetworkPolicy.IsDenyAll,
        Network = new NetworkRequest
        {
            AllowOut = r.NetworkPolicy.Allow.Select(a => a.Destination).ToList(),
            DenyOut = r.NetworkPolicy.Deny.Select(a => a.Destination).ToList(),
            AllowPublicTraffic = r.NetworkPolicy.PublicIngress,
        },
        Node = r.NodeId,
    };

    public static SandboxMetricItem ToMetric(SandboxMetric m) => new()
    {
        Timestamp = m.At,
        TimestampUnix = m.At.ToUnixTimeSeconds(),
        CpuCount = m.CpuCount,
        CpuUsedPct = m.CpuUsedPct,
        MemUsed = m.MemUsed,
        MemTotal = m.MemTotal,
        DiskUsed = m.DiskUsed,
        DiskTotal = m.DiskTotal,
    };

    public static SandboxLogs ToLogs(IReadOnlyList<SandboxLogLine> lines) => new()
    {
        Logs = lines.Select(l => new SandboxLogItem { Timestamp = l.At, Line = l.Message }).ToList(),
        LogEntries = lines.Select(l => new SandboxLogEntry { Timestamp = l.At, Level = l.Level, Message = l.Message, Fields = new() { ["source"] = l.Source } }).ToList(),
    };

    public static UsageReport ToUsage(string tenantId, DateTimeOffset at, IReadOnlyList<SandboxRecord> sandboxes)
    {
        var items = sandboxes.Select(r => new SandboxUsageItem { SandboxId = r.SandboxId, State = r.State.ToString().ToLowerInvariant(), Boundary = r.Boundary.Name(), Usage = r.Usage }).ToList();
        var total = new SandboxUsage
        {
            RunningSeconds = items.Sum(i => i.Usage.RunningSeconds),
            VCpuSeconds = items.Sum(i => i.Usage.VCpuSeconds),
            MemoryGiBSeconds = items.Sum(i => i.Usage.MemoryGiBSeconds),
            CpuSeconds = items.Sum(i => i.Usage.CpuSeconds),
            PausedGiBHours = items.Sum(i => i.Usage.PausedGiBHours),
            MeteredAt = at,
        };
        return new UsageReport { TenantId = tenantId, At = at, Total = total, Sandboxes = items };
    }

    public static DateTimeOffset? UnixSeconds(Microsoft.Extensions.Primitives.StringValues value, string name) =>
        value.ToString() is not { Length: > 0 } text ? null
        : long.TryParse(text, out var seconds) && seconds >= 0 && seconds < 100_000_000_000 ? DateTimeOffset.FromUnixTimeSeconds(seconds)
        : throw ApiProblem.BadRequest("invalid_" + name, $"{name} must be unix seconds.");

    public static SandboxState ParseState(string value) => value.ToLowerInvariant() switch
    {
        "creating" => SandboxState.Creating,
        "running" => SandboxState.Running,
        "pausing" => SandboxState.Pausing,
        "paused" => SandboxState.Paused,
        "resuming" => SandboxState.Resuming,
        "killed" => SandboxState.Killed,
        "failed" => SandboxState.Failed,
        "unresponsive" => SandboxState.Unresponsive,
        _ => throw ApiProblem.BadRequest("invalid_state", $"Unknown state '{value}'."),
    };

    /// <summary>
    /// E2B's metadata filter: one query value holding a form (<c>k=v&amp;k2=v2</c>, '+' for space) whose keys and values
    /// the SDK also URI-encoded (encodeURIComponent), so each is decoded twice.
    /// </summary>
    public static Dictionary<string, string> ParseMetadataFilter(Microsoft.Extensions.Primitives.StringValues values)
    {
        static string Decode(string s) => Uri.UnescapeDataString(Uri.UnescapeDataString(s.Replace('+', ' ')));
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var value in values)
        {
            foreach (var pair in (value ?? "").Split('&', StringSplitOptions.RemoveEmptyEntries))
            {
                var eq = pair.IndexOf('=', StringComparison.Ordinal);
                if (eq <= 0)
                {
                    throw ApiProblem.BadRequest("invalid_metadata_filter", $"metadata filter '{pair}' must be key=value.");
                }

                result[Decode(pair[..eq])] = Decode(pair[(eq + 1)..]);
            }
        }

        return result;
    }
}

/// <summary>Keyset pagination of a sandbox list: the token names the last item returned (start time and id).</summary>
internal static class Pagination
{
    public static IReadOnlyList<SandboxRecord> Page(IReadOnlyList<SandboxRecord> records, bool descending, string token, int limit, out string? next)
    {
        IEnumerable<SandboxRecord> ordered = descending
            ? records.OrderByDescending(r => r.CreatedAt).ThenByDescending(r => r.SandboxId, StringComparer.Ordinal)
            : records.OrderBy(r => r.CreatedAt).ThenBy(r => r.SandboxId, StringComparer.Ordinal);
        if (token.Length > 0)
        {
            var (ticks, id) = Parse(token);
            ordered = ordered.Where(r =>
            {
                var c = r.CreatedAt.UtcTicks.CompareTo(ticks);
                c = c != 0 ? c : string.CompareOrdinal(r.SandboxId, id);
                return descending ? c < 0 : c > 0;
            });
        }

        var page = ordered.Take(limit + 1).ToList();
        next = null;
        if (page.Count > limit)
        {
            page.RemoveAt(limit);
            var last = page[^1];
            next = Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes($"{last.CreatedAt.UtcTicks}:{last.SandboxId}")).TrimEnd('=').Replace('+', '-').Replace('/', '_');
        }

        return page;
    }

    private static (long Ticks, string Id) Parse(string token)
    {
        try
        {
            var padded = token.Replace('-', '+').Replace('_', '/');
            padded += new string('=', (4 - padded.Length % 4) % 4);
            var text = System.Text.Encoding.UTF8.GetString(Convert.FromBase64String(padded));
            var colon = text.IndexOf(':', StringComparison.Ordinal);
            if (colon > 0 && long.TryParse(text.AsSpan(0, colon), out var ticks) && SandboxIds.Valid(text[(colon + 1)..]))
            {
                return (ticks, text[(colon + 1)..]);
            }
        }
        catch (FormatException)
        {
            // falls through to the 400 below
        }

        throw ApiProblem.BadRequest("invalid_next_token", "nextToken is not one this server issued.");
    }
}
