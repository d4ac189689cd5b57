namespace Airlock.Sandboxes;

/// <summary>Finds the published Native AOT guest agent binary.</summary>
public static class GuestAgentLocator
{
    public const string FileName = "airlock-guest";

    public static string Find(string? configured)
    {
        if (!string.IsNullOrEmpty(configured))
        {
            return File.Exists(configured) ? Path.GetFullPath(configured) : throw new FileNotFoundException($"Guest agent not found at {configured}.");
        }

        var fromEnv = Environment.GetEnvironmentVariable("AIRLOCK_GUEST_AGENT");
        if (!string.IsNullOrEmpty(fromEnv) && File.Exists(fromEnv))
        {
            return Path.GetFullPath(fromEnv);
        }

        foreach (var candidate in Candidates())
        {
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new FileNotFoundException(
            "Guest agent binary 'airlock-guest' not found. Publish it with `dotnet publish src/Airlock.Guest -c Release -r linux-x64 -o artifacts/guest` or set AIRLOCK_GUEST_AGENT.");
    }

    private static IEnumerable<string> Candidates()
    {
        yield return Path.Combine(AppContext.BaseDirectory, FileName);
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            yield return Path.Combine(dir.FullName, "artifacts", "guest", FileName);
        }

        yield return Path.Combine("/usr/local/lib/airlock", FileName);
    }
}
