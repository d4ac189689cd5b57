/// <summary>Percentiles of timings (nearest rank), shared by every benchmark.</summary>
internal static class Stats
{
    public static double P(List<double> values, int percentile)
    {
        var sorted = values.Order().ToList();
        return sorted[Math.Clamp((int)Math.Ceiling(percentile / 100.0 * sorted.Count) - 1, 0, sorted.Count - 1)];
    }
}
