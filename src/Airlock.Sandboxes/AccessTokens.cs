using System.Security.Cryptography;
using System.Text;

namespace Airlock.Sandboxes;

/// <summary>Per-sandbox access tokens: shown once to the caller, stored as SHA-256, compared in constant time.</summary>
public static class AccessTokens
{
    public static string New() => "ea_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(24));

    public static string Hash(string secret) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(secret)));

    /// <summary>Constant-time comparison of a presented secret with a stored hash.</summary>
    public static bool Matches(string? presented, string storedHash)
    {
        if (string.IsNullOrEmpty(presented))
        {
            return false;
        }

        return CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(Hash(presented)), Encoding.ASCII.GetBytes(storedHash));
    }
}

/// <summary>Sandbox ids: 20 characters of [a-z0-9], as E2B's.</summary>
public static class SandboxIds
{
    public static bool Valid(string? id) => id is { Length: 20 } && id.All(c => c is >= 'a' and <= 'z' or >= '0' and <= '9');

    public static string New()
    {
        const string alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
        return RandomNumberGenerator.GetString(alphabet, 20);
    }
}
