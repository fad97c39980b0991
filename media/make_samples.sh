#!/usr/bin/env sh
# Remake the sample media served by default from /media/ (needs Debian's ffmpeg).
#   media/make_samples.sh [output-dir]     (default: the folder of this script)
# sample.mp4  — 10 s 640x360 H.264 + AAC, index (moov) at the front (+faststart),
#               keyframe every second so seeking lands close to the target.
# sample.webm — 6 s VP8 + Opus, the royalty-free pair every browser plays.
# sample.opus — 10 s Opus audio in Ogg.
# Synthetic sources (testsrc2, sine) so nothing copyrighted is shipped; bitexact
# flags keep container metadata free of encoder version strings.
set -eu
out="${1:-$(dirname "$0")}"
ff="ffmpeg -hide_banner -loglevel error -y"

$ff -f lavfi -i "testsrc2=size=640x360:rate=24:duration=10" \
    -f lavfi -i "sine=frequency=440:beep_factor=4:duration=10:sample_rate=48000" \
    -c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p -b:v 900k -maxrate 1200k \
    -bufsize 2400k -g 24 -keyint_min 24 -sc_threshold 0 \
    -c:a aac -b:a 96k -ac 2 -movflags +faststart -fflags +bitexact -map_metadata -1 \
    "$out/sample.mp4"

$ff -f lavfi -i "testsrc2=size=640x360:rate=24:duration=6" \
    -f lavfi -i "sine=frequency=330:beep_factor=2:duration=6:sample_rate=48000" \
    -c:v libvpx -deadline realtime -cpu-used 8 -b:v 700k -g 24 \
    -c:a libopus -b:a 64k -fflags +bitexact -map_metadata -1 \
    "$out/sample.webm"

$ff -f lavfi -i "sine=frequency=523.25:beep_factor=3:duration=10:sample_rate=48000" \
    -c:a libopus -b:a 48k -fflags +bitexact -map_metadata -1 \
    "$out/sample.opus"

ls -l "$out"/sample.*
