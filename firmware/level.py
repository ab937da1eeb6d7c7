# Geometry and physics of a level measurement: the speed of sound in air from its
# temperature, and level above the shaft invert from the distance to the water.
import math

SPEED_0C_MM_S = 331300  # speed of sound in dry air at 0 °C


def speed_of_sound_mm_s(temp_c):
    # c = 331.3 m/s * sqrt(1 + T/273.15); 20 °C -> 343.2 m/s. Without a temperature, 20 °C.
    if temp_c is None:
        temp_c = 20.0
    return int(SPEED_0C_MM_S * math.sqrt(1 + temp_c / 273.15))


def level_from_distance_mm(mount_mm, distance_mm):
    # mount_mm: sensor face height above the invert (from the config)
    return mount_mm - distance_mm


def rise_mm_min(prev_mm, prev_ms, level_mm, now_ms):
    # Rate of rise in mm per minute between two readings; 0 when there is no history
    if prev_mm is None or now_ms <= prev_ms:
        return 0
    return (level_mm - prev_mm) * 60000 // (now_ms - prev_ms)
