/* Built-in architecture presets (src/hw/presets.c). */
#ifndef ET_HW_PRESETS_H
#define ET_HW_PRESETS_H
extern const char et_hw_preset_elearn[];
extern const char et_hw_preset_baseline[];
extern const char et_hw_preset_trainer[];
#endif
