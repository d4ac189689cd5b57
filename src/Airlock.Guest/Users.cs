namespace Airlock.Guest;

/// <summary>A user from the sandbox's /etc/passwd.</summary>
internal sealed record UserAccount(string Name, uint Uid, uint Gid, string Home);

/// <summary>
/// Resolves users inside the sandbox. The agent runs either as the sandbox user (process and container boundaries:
/// it cannot switch) or as root (microVM: it switches to the requested user for every command and every file operation).
/// </summary>
internal sealed class Users
{
    private readonly string _passwdPath;
    private readonly string _groupPath;

    public Users(string passwdPath = "/etc/passwd", string groupPath = "/etc/group")
    {
        _passwdPath = passwdPath;
        _groupPath = groupPath;
        var uid = NativeMethods.geteuid();
        Self = Find(uid) ?? new UserAccount(uid == 0 ? "root" : uid.ToString(System.Globalization.CultureInfo.InvariantCulture), uid, uid, Environment.GetEnvironmentVariable("HOME") ?? "/");
    }

    /// <summary>The account the agent itself runs as.</summary>
    public UserAccount Self { get; }

    public bool CanSwitch => Self.Uid == 0;

    /// <summary>The account to act as for a request naming <paramref name="name"/> (null or empty: the default).</summary>
    public UserAccount Resolve(string? name, string? defaultUser)
    {
        name = string.IsNullOrEmpty(name) ? defaultUser : name;
        if (string.IsNullOrEmpty(name) || name == Self.Name)
        {
            return Self;
        }

        if (!CanSwitch)
        {
            throw new Envd.Connect.ConnectException(
                Envd.Connect.ConnectCodes.PermissionDenied,
                $"this boundary runs every command as '{Self.Name}'; user '{name}' is not available here");
        }

        return Find(name) ?? throw new Envd.Connect.ConnectException(Envd.Connect.ConnectCodes.InvalidArgument, $"user '{name}' does not exist in this sandbox");
    }

    /// <summary>The name of <paramref name="uid"/>, or the number when /etc/passwd has none.</summary>
    public string UserName(uint uid) => Find(uid)?.Name ?? uid.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The name of <paramref name="gid"/>, or the number when /etc/group has none.</summary>
    public string GroupName(uint gid)
    {
        if (File.Exists(_groupPath))
        {
            foreach (var line in File.ReadLines(_groupPath))
            {
                var f = line.Split(':');
                if (f.Length >= 3 && uint.TryParse(f[2], out var id) && id == gid)
                {
                    return f[0];
                }
            }
        }

        return gid.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// Runs path-based file-system work as <paramref name="account"/>: with its file-system uid, gid and supplementary
    /// groups when the agent is root and acts for someone else (see <see cref="UserCredentials"/>), else directly.
    /// What it creates is the account's, and what the account may not touch fails with <see cref="UnauthorizedAccessException"/>.
    /// </summary>
    public T As<T>(UserAccount account, Func<T> action) =>
        CanSwitch && account.Uid != Self.Uid ? UserCredentials.Run(account, Groups(account), action) : action();

    /// <inheritdoc cref="As{T}(UserAccount, Func{T})"/>
    public void As(UserAccount account, Action action) => As(account, () =>
    {
        action();
        return 0;
    });

    /// <summary>The account's primary group and every group in /etc/group that lists it, like <c>initgroups(3)</c>.</summary>
    internal uint[] Groups(UserAccount account)
    {
        var groups = new List<uint> { account.Gid };
        if (File.Exists(_groupPath))
        {
            foreach (var line in File.ReadLines(_groupPath))
            {
                var f = line.Split(':');
                if (f.Length >= 4 && uint.TryParse(f[2], out var gid) && !groups.Contains(gid)
                    && f[3].Split(',', StringSplitOptions.TrimEntries).Contains(account.Name, StringComparer.Ordinal))
                {
                    groups.Add(gid);
                }
            }
        }

        return [.. groups];
    }

    private UserAccount? Find(uint uid) => Read().FirstOrDefault(u => u.Uid == uid);

    private UserAccount? Find(string name) => Read().FirstOrDefault(u => u.Name == name);

    private IEnumerable<UserAccount> Read()
    {
        if (!File.Exists(_passwdPath))
        {
            yield break;
        }

        foreach (var line in File.ReadLines(_passwdPath))
        {
            var f = line.Split(':');
            if (f.Length >= 7 && uint.TryParse(f[2], out var uid) && uint.TryParse(f[3], out var gid))
            {
                yield return new UserAccount(f[0], uid, gid, f[5]);
            }
        }
    }
}
