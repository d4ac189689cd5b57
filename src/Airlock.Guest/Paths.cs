using Airlock.Envd.Connect;

namespace Airlock.Guest;

/// <summary>
/// Path rules of the agent. It runs inside the sandbox's own mount namespace (or kernel), so every path — including
/// a symlink's target — resolves inside the sandbox; the checks here are about clear errors, not containment.
/// </summary>
internal static class Paths
{
    public static string Resolve(string path, UserAccount user)
    {
        if (string.IsNullOrEmpty(path))
        {
            throw new ConnectException(ConnectCodes.InvalidArgument, "path is required");
        }

        if (path.Contains('\0', StringComparison.Ordinal))
        {
            throw new ConnectException(ConnectCodes.InvalidArgument, "path contains a NUL byte");
        }

        if (path == "~" || path.StartsWith("~/", StringComparison.Ordinal))
        {
            path = user.Home + path[1..];
        }

        return Path.GetFullPath(Path.IsPathRooted(path) ? path : Path.Combine(user.Home, path));
    }
}
