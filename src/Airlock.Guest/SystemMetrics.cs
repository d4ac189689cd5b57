using System.Globalization;
using System.Text.Json.Serialization;

namespace Airlock.Guest;

/// <summary>
/// envd's <c>GET /metrics</c>: the guest's own view of its CPU, memory and root disk (meaningful where the sandbox has
/// its own kernel, the microVM; elsewhere /proc shows the host's). CPU use is sampled in the background, once a second
/// from /proc/stat, so a request answers at once with the last second's figure; a fresh agent has its first after
/// <see cref="FirstSample"/>.
/// </summary>
internal sealed partial class SystemMetrics(TimeProvider time, ILogger<SystemMetrics> logger) : BackgroundService
{
    private static readonly TimeSpan FirstSample = TimeSpan.FromMilliseconds(250);
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);

    private readonly TaskCompletionSource _sampled = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile float _cpuUsedPercent;

    public async Task HandleAsync(HttpContext context)
    {
        try
        {
            await _sampled.Task.WaitAsync(TimeSpan.FromSeconds(3), time, context.RequestAborted);
        }
        catch (TimeoutException)
        {
            // No sample yet (an unreadable /proc/stat): answer with what can be read.
        }

        var metrics = Read();
        context.Response.StatusCode = StatusCodes.Status200OK;
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(System.Text.Json.JsonSerializer.Serialize(metrics, GuestJsonContext.Default.AgentMetrics), context.RequestAborted);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var previous = CpuTimes.Read();
        await Task.Delay(FirstSample, time, stoppingToken);
        using var timer = new PeriodicTimer(Interval, time);
        do
        {
            try
            {
                var current = CpuTimes.Read();
                _cpuUsedPercent = current.UsedPercentSince(previous);
                previous = current;
                _sampled.TrySetResult();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
            {
                SampleFailed(logger, e.Message);
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    private AgentMetrics Read()
    {
        var memory = ReadMeminfo();
        long total = memory.GetValueOrDefault("MemTotal"), free = memory.GetValueOrDefault("MemFree");
        var cache = memory.GetValueOrDefault("Cached") + memory.GetValueOrDefault("SReclaimable");
        var used = Math.Max(0, total - free - memory.GetValueOrDefault("Buffers") - cache);
        long diskTotal = 0, diskUsed = 0;
        try
        {
            var root = new DriveInfo("/");
            diskTotal = root.TotalSize;
            diskUsed = diskTotal - root.AvailableFreeSpace;
        }
        catch (IOException e)
        {
            SampleFailed(logger, e.Message);
        }

        return new AgentMetrics
        {
            Timestamp = time.GetUtcNow().ToUnixTimeSeconds(),
            CpuCount = CpuTimes.Count(),
            CpuUsedPercent = _cpuUsedPercent,
            MemTotalMiB = total / 1024 / 1024,
            MemUsedMiB = used / 1024 / 1024,
            MemTotal = total,
            MemUsed = used,
            MemCache = cache,
            DiskUsed = diskUsed,
            DiskTotal = diskTotal,
        };
    }

    /// <summary>/proc/meminfo in bytes, by field name.</summary>
    private static Dictionary<string, long> ReadMeminfo()
    {
        var fields = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var line in File.ReadLines("/proc/meminfo"))
        {
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            var parts = line[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (colon > 0 && parts.Length > 0 && long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var value))
            {
                fields[line[..colon]] = parts.Length > 1 && parts[1] == "kB" ? value * 1024 : value;
            }
        }

        return fields;
    }

    /// <summary>The aggregate line of /proc/stat, in clock ticks.</summary>
    private readonly record struct CpuTimes(ulong Busy, ulong Total)
    {
        public static CpuTimes Read()
        {
            using var reader = new StreamReader("/proc/stat");
            var line = reader.ReadLine() ?? throw new FormatException("/proc/stat is empty");
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 8 || f[0] != "cpu")
            {
                throw new FormatException($"unexpected /proc/stat line '{line}'");
            }

            // user nice system idle iowait irq softirq steal (guest time is already counted in user and nice).
            var values = f.Skip(1).Take(8).Select(v => ulong.Parse(v, NumberStyles.None, CultureInfo.InvariantCulture)).ToArray();
            var total = values.Aggregate(0UL, (sum, v) => sum + v);
            return new CpuTimes(total - values[3] - values[4], total);
        }

        public static int Count() =>
            File.ReadLines("/proc/stat").Count(l => l.Length > 3 && l.StartsWith("cpu", StringComparison.Ordinal) && char.IsAsciiDigit(l[3]));

        /// <summary>Busy share of the time since <paramref name="earlier"/>, in percent rounded to two decimals (as envd).</summary>
        public float UsedPercentSince(CpuTimes earlier)
        {
            var total = Total - earlier.Total;
            return total == 0 || Busy < earlier.Busy ? 0 : (float)Math.Round(100.0 * (Busy - earlier.Busy) / total, 2);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "metrics sample failed: {Reason}")]
    private static partial void SampleFailed(ILogger logger, string reason);
}

/// <summary>envd's metrics document (field names as envd serves them; sizes in bytes, the *_mib pair deprecated by envd).</summary>
internal sealed record AgentMetrics
{
    [JsonPropertyName("ts")] public long Timestamp { get; init; }

    [JsonPropertyName("cpu_count")] public int CpuCount { get; init; }

    [JsonPropertyName("cpu_used_pct")] public float CpuUsedPercent { get; init; }

    [JsonPropertyName("mem_total_mib")] public long MemTotalMiB { get; init; }

    [JsonPropertyName("mem_used_mib")] public long MemUsedMiB { get; init; }

    [JsonPropertyName("mem_total")] public long MemTotal { get; init; }

    [JsonPropertyName("mem_used")] public long MemUsed { get; init; }

    [JsonPropertyName("mem_cache")] public long MemCache { get; init; }

    [JsonPropertyName("disk_used")] public long DiskUsed { get; init; }

    [JsonPropertyName("disk_total")] public long DiskTotal { get; init; }
}

/// <summary>The agent's one source-generated JSON context (no reflection under Native AOT).</summary>
[JsonSerializable(typeof(AgentMetrics))]
internal sealed partial class GuestJsonContext : JsonSerializerContext;
