namespace Airlock.Boundaries;

/// <summary>File modes; Airlock's drivers run on Linux only.</summary>
internal static class UnixFiles
{
    public static void SetMode(string path, UnixFileMode mode)
    {
        if (OperatingSystem.IsWindows())
        {
            throw new PlatformNotSupportedException("Airlock's sandbox drivers need Linux");
        }

        File.SetUnixFileMode(path, mode);
    }

    public static void AddMode(string path, UnixFileMode mode)
    {
        if (OperatingSystem.IsWindows())
        {
            throw new PlatformNotSupportedException("Airlock's sandbox drivers need Linux");
        }

        File.SetUnixFileMode(path, File.GetUnixFileMode(path) | mode);
    }
}
