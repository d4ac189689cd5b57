using System.Diagnostics;

namespace Airlock.Guest.Tests;

/// <summary>
/// A throwaway non-root account (with its own home and one supplementary group) for the agent to act for, and a
/// root-owned area it must not be able to change. Made with useradd/groupadd and removed afterwards; needs root, like
/// the rest of these tests.
/// </summary>
public sealed class SandboxUserFixture : IAsyncLifetime
{
    private readonly string _suffix = Guid.NewGuid().ToString("N")[..8];

    public string Name => "airlock-t" + _suffix;

    /// <summary>A group the user is a supplementary member of (not its primary group).</summary>
    public string Group => "airlock-g" + _suffix;

    public string Home => $"/tmp/{Name}-home";

    public uint Uid { get; private set; }

    public uint Gid { get; private set; }

    /// <summary>
    /// A root-owned 0755 directory with root's files in it: owned.txt (0644), secret.txt (0600), group.txt (0640, group
    /// <see cref="Group"/>), sticky/ (1777, like /tmp) holding root.txt (0644), and private/ (0700) holding inner/file.txt.
    /// </summary>
    public string Area { get; } = Directory.CreateTempSubdirectory("airlock-guest-root-area-").FullName;

    public async Task InitializeAsync()
    {
        if (OperatingSystem.IsWindows())
        {
            throw new PlatformNotSupportedException("the agent and its users are Linux only");
        }

        await RunAsync("groupadd", Group);
        await RunAsync("useradd", "--create-home", "--home-dir", Home, "--user-group", "--groups", Group, "--shell", "/bin/sh", Name);
        Uid = uint.Parse(await RunAsync("id", "-u", Name), System.Globalization.CultureInfo.InvariantCulture);
        Gid = uint.Parse(await RunAsync("id", "-g", Name), System.Globalization.CultureInfo.InvariantCulture);

        // mkdtemp makes the area 0700; the user must be able to look in, but not change anything.
        File.SetUnixFileMode(Area, (UnixFileMode)0b111_101_101);
        await File.WriteAllTextAsync(Path.Combine(Area, "owned.txt"), "original");
        File.SetUnixFileMode(Path.Combine(Area, "owned.txt"), (UnixFileMode)0b110_100_100);
        await File.WriteAllTextAsync(Path.Combine(Area, "secret.txt"), "root only");
        File.SetUnixFileMode(Path.Combine(Area, "secret.txt"), (UnixFileMode)0b110_000_000);
        await File.WriteAllTextAsync(Path.Combine(Area, "group.txt"), "for the group");
        File.SetUnixFileMode(Path.Combine(Area, "group.txt"), (UnixFileMode)0b110_100_000);
        await RunAsync("chgrp", Group, Path.Combine(Area, "group.txt"));
        Directory.CreateDirectory(Path.Combine(Area, "sticky"));
        File.SetUnixFileMode(Path.Combine(Area, "sticky"), (UnixFileMode)0b1_111_111_111); // like /tmp
        await File.WriteAllTextAsync(Path.Combine(Area, "sticky", "root.txt"), "original");
        File.SetUnixFileMode(Path.Combine(Area, "sticky", "root.txt"), (UnixFileMode)0b110_100_100);
        Directory.CreateDirectory(Path.Combine(Area, "private", "inner"));
        await File.WriteAllTextAsync(Path.Combine(Area, "private", "inner", "file.txt"), "hidden");
        File.SetUnixFileMode(Path.Combine(Area, "private"), (UnixFileMode)0b111_000_000);
    }

    public async Task DisposeAsync()
    {
        await RunAsync("userdel", "--remove", Name);
        await RunAsync("groupdel", Group);
        Directory.Delete(Area, recursive: true);
    }

    /// <summary>The numeric owner of a path, as <c>uid:gid</c>.</summary>
    public static Task<string> OwnerAsync(string path) => RunAsync("stat", "-c", "%u:%g", path);

    private static async Task<string> RunAsync(string command, params string[] args)
    {
        var start = new ProcessStartInfo(command) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await process.WaitForExitAsync(timeout.Token);
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{command} {string.Join(' ', args)} failed ({process.ExitCode}): {await stderr}");
        }

        return (await stdout).Trim();
    }
}
