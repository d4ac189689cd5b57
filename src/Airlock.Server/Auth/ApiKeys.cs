using System.Security.Cryptography;
using System.Text;

namespace Airlock.Server.Auth;

/// <summary>API key and token material. Keys are shown once and stored only as SHA-256.</summary>
public static class ApiKeys
{
    /// <summary>Keys use E2B's shape (<c>e2b_</c> + hex) so E2B SDKs accept them without turning off their format check.</summary>
    public const string Prefix = "e2b_";

    public static string NewApiKey() => Prefix + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(20));

    public static string NewAccessToken() => "ea_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(24));

    public static string NewId(int bytes = 8) => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(bytes));

    public static string Hash(string secret) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(secret)));

    /// <summary>Constant-time comparison of a presented secret with a stored hash.</summary>
    public static bool Matches(string? presented, string storedHash)
    {
        if (string.IsNullOrEmpty(presented))
        {
            return false;
        }

        var a = Encoding.ASCII.GetBytes(Hash(presented));
        var b = Encoding.ASCII.GetBytes(storedHash);
        return CryptographicOperations.FixedTimeEquals(a, b);
    }
}
