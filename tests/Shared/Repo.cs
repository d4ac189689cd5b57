namespace Airlock.Testing;

/// <summary>The repository checkout the tests run from (where artifacts/ and docs/ are).</summary>
internal static class Repo
{
    public static string Root { get; } = Find();

    private static string Find()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Airlock.slnx")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("cannot find the repository root (Airlock.slnx) above " + AppContext.BaseDirectory);
    }
}
