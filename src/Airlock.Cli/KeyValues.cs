using System.CommandLine;

namespace Airlock.Cli;

/// <summary><c>K=V</c> options (<c>--env</c>, <c>--metadata</c>).</summary>
internal static class KeyValues
{
    public static Option<string[]> Option(string name, string description)
    {
        var option = new Option<string[]>(name) { Description = description, Arity = ArgumentArity.ZeroOrMore, HelpName = "K=V" };
        option.Validators.Add(result =>
        {
            foreach (var token in result.Tokens)
            {
                if (!TryParse(token.Value, out _, out _))
                {
                    result.AddError($"{name} expects KEY=VALUE with a non-empty key, got '{token.Value}'.");
                }
            }
        });
        return option;
    }

    public static Dictionary<string, string>? ToDictionary(string[]? values)
    {
        if (values is null || values.Length == 0)
        {
            return null;
        }

        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var value in values)
        {
            if (!TryParse(value, out var key, out var v))
            {
                throw new CliUsageException($"expected KEY=VALUE, got '{value}'.");
            }

            result[key] = v;
        }

        return result;
    }

    public static bool TryParse(string text, out string key, out string value)
    {
        var eq = text.IndexOf('=', StringComparison.Ordinal);
        key = eq > 0 ? text[..eq].Trim() : "";
        value = eq > 0 ? text[(eq + 1)..] : "";
        return key.Length > 0;
    }
}
