namespace Airlock.Sandboxes.Policy;

/// <summary>Checks of what a caller hands a sandbox verbatim: environment variables and metadata.</summary>
internal static class SandboxInputs
{
    /// <summary>Longest environment variable name accepted (Linux has no limit of its own; 256 is far past any real one).</summary>
    public const int MaxEnvNameLength = 256;

    /// <summary>Longest environment variable value accepted.</summary>
    public const int MaxEnvValueLength = 32 * 1024;

    public static Dictionary<string, string> Env(IReadOnlyDictionary<string, string> env)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, value) in env)
        {
            // POSIX names only ([A-Za-z_][A-Za-z0-9_]*): anything else cannot be set or read back from a shell as
            // written, and '=', whitespace or a newline would inject another variable or line where env is rendered.
            if (!IsPosixName(name))
            {
                throw SandboxException.Invalid("invalid_env", $"envVars name '{Printable(name)}' is not a POSIX name ([A-Za-z_][A-Za-z0-9_]*, at most {MaxEnvNameLength} characters).");
            }

            if (name.StartsWith("AIRLOCK_", StringComparison.Ordinal))
            {
                throw SandboxException.Invalid("invalid_env", $"envVars name '{name}' is reserved (AIRLOCK_ is Airlock's prefix).");
            }

            if (value is null || value.Contains('\0', StringComparison.Ordinal) || value.Length > MaxEnvValueLength)
            {
                throw SandboxException.Invalid("invalid_env", $"envVars value for '{name}' is not allowed (NUL byte or longer than 32 KiB).");
            }

            result[name] = value;
        }

        return result.Count > 128 ? throw SandboxException.Invalid("invalid_env", "at most 128 envVars.") : result;
    }

    /// <summary>A POSIX environment variable name: <c>[A-Za-z_][A-Za-z0-9_]*</c>, 1 to <see cref="MaxEnvNameLength"/> characters.</summary>
    public static bool IsPosixName(string? name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > MaxEnvNameLength || char.IsAsciiDigit(name[0]))
        {
            return false;
        }

        foreach (var c in name)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c == '_'))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>A name as it can be shown in an error message: control characters escaped, cut at 64 characters.</summary>
    private static string Printable(string? name)
    {
        var text = name ?? "";
        var shown = new System.Text.StringBuilder();
        foreach (var c in text.Length > 64 ? text[..64] : text)
        {
            shown.Append(char.IsControl(c) ? "\\u" + ((int)c).ToString("x4", System.Globalization.CultureInfo.InvariantCulture) : c.ToString());
        }

        return text.Length > 64 ? shown.Append('…').ToString() : shown.ToString();
    }

    public static Dictionary<string, string> Metadata(IReadOnlyDictionary<string, string> metadata)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in metadata)
        {
            if (key.Length is 0 or > 256 || value is null || value.Length > 4096)
            {
                throw SandboxException.Invalid("invalid_metadata", $"metadata key '{key}' or its value is invalid (key 1-256 chars, value at most 4096).");
            }

            result[key] = value;
        }

        return result.Count > 64 ? throw SandboxException.Invalid("invalid_metadata", "at most 64 metadata entries.") : result;
    }
}
