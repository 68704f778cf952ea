// A tiny holistream subscriber: prints the head and wrist positions of every result of a stream.
//
//   mcs -out:holistream-example.exe clients/csharp/Holistream.cs clients/csharp/Example.cs
//   mono holistream-example.exe --url ws://127.0.0.1:8000 --stream alice [--format json] [--rig]
//
// --dump N prints each result as one JSON line with every decoded value instead (what the test suite
// compares with the Python client), and exits after the stream ends or N results.
// --produce IMAGE --frames N publishes IMAGE N times as the stream (a producer within its credits and
// granted rate) and prints its own results.
using System;
using System.Globalization;
using System.Text;
using System.Threading;
using Holistream;

public static class Example
{
    public static int Main(string[] args)
    {
        var options = new HolistreamOptions { Stream = "demo" };
        int dump = 0, frames = 0;
        double seconds = 600;
        byte[] image = null;
        for (int i = 0; i < args.Length; i++)
        {
            string a = args[i];
            if (a == "--url") options.Url = args[++i];
            else if (a == "--stream") options.Stream = args[++i];
            else if (a == "--format") options.Format = args[++i];
            else if (a == "--rig") options.Rig = true;
            else if (a == "--dump") dump = int.Parse(args[++i], CultureInfo.InvariantCulture);
            else if (a == "--seconds") seconds = double.Parse(args[++i], CultureInfo.InvariantCulture);
            else if (a == "--produce") { image = System.IO.File.ReadAllBytes(args[++i]); options.Role = HolistreamRole.Producer; }
            else if (a == "--frames") frames = int.Parse(args[++i], CultureInfo.InvariantCulture);
            else { Console.Error.WriteLine("unknown argument " + a); return 2; }
        }
        using (var client = new HolistreamClient(options))
        {
            client.Start();
            int results = 0, sent = 0;
            var deadline = DateTime.UtcNow.AddSeconds(seconds);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (DateTime.UtcNow < deadline)
            {
                if (image != null && sent < frames && client.TrySendFrame(image, clock.Elapsed.TotalMilliseconds)) sent++;
                HolistreamMessage msg;
                if (!client.TryReceive(out msg))
                {
                    // A producer is done once every frame is answered and every answer printed.
                    if (image != null && sent == frames && client.Connected && client.InFlight == 0) return 0;
                    Thread.Sleep(2);
                    continue;
                }
                var result = msg as HolistreamResult;
                var ev = msg as HolistreamEvent;
                if (ev != null)
                {
                    Console.WriteLine("{\"event\":" + Quote(ev.Type) + (ev.Code != null ? ",\"code\":" + Quote(ev.Code) : "") + "}");
                    if (ev.Type == "stream_ended" && dump > 0) return 0;
                    if (ev.Type == "disconnected" && client.PermanentError != null) return 1;
                    continue;
                }
                results++;
                if (dump > 0) Console.WriteLine(Dump(result));
                else PrintPositions(result);
                Console.Out.Flush();
                if (dump > 0 && results >= dump) return 0;
            }
            return dump > 0 ? 3 : 0;
        }
    }

    static void PrintPositions(HolistreamResult r)
    {
        // Pose points: 0 nose, 15 left wrist, 16 right wrist (MediaPipe's order; normalised image units).
        var line = new StringBuilder("frame " + r.Frame);
        string[] names = { "head", "left wrist", "right wrist" };
        int[] points = { 0, 15, 16 };
        for (int i = 0; i < names.Length; i++)
        {
            float x, y, z;
            if (r.Point("pose", points[i], out x, out y, out z))
                line.AppendFormat(CultureInfo.InvariantCulture, "  {0} ({1:F3}, {2:F3}, {3:F3})", names[i], x, y, z);
            else line.Append("  " + names[i] + " -");
        }
        if (r.Rig != null)
            line.AppendFormat(CultureInfo.InvariantCulture, "  head yaw {0:F1} pitch {1:F1} roll {2:F1}", r.Rig.Head[0], r.Rig.Head[1], r.Rig.Head[2]);
        Console.WriteLine(line.ToString());
    }

    static string Quote(string s) { return "\"" + (s ?? "").Replace("\\", "\\\\").Replace("\"", "\\\"") + "\""; }

    static string Dump(HolistreamResult r)
    {
        var sb = new StringBuilder("{\"frame\":" + r.Frame + ",\"seq\":" + r.Seq + ",\"width\":" + r.Width
                                   + ",\"height\":" + r.Height + ",\"pipeline\":" + Quote(r.Pipeline));
        for (int i = 0; i < HolistreamResult.PartNames.Length; i++)
            sb.Append(",\"").Append(HolistreamResult.PartNames[i]).Append("\":").Append(Floats(r.Parts[i]));
        if (r.Rig != null)
        {
            sb.Append(",\"rig\":{\"bones\":").Append(Floats(r.Rig.Bones)).Append(",\"hips\":").Append(Floats(r.Rig.Hips));
            sb.Append(",\"head\":").Append(Floats(r.Rig.Head)).Append(",\"expressions\":").Append(Floats(r.Rig.Expressions));
            sb.Append(",\"confidence\":").Append(Floats(r.Rig.Confidence)).Append('}');
        }
        return sb.Append('}').ToString();
    }

    // Each float32 widened to double and printed round-trip: the exact value, nothing rounded.
    static string Floats(float[] values)
    {
        if (values == null) return "null";
        var sb = new StringBuilder("[");
        for (int i = 0; i < values.Length; i++)
        {
            if (i > 0) sb.Append(',');
            double d = values[i];
            if (d == 0 && BitConverter.DoubleToInt64Bits(d) < 0) sb.Append("-0.0");  // Mono prints -0 as 0
            else sb.Append(d.ToString("R", CultureInfo.InvariantCulture));
        }
        return sb.Append(']').ToString();
    }
}
