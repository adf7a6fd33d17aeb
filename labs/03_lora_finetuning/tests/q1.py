OK_FORMAT = True

test = {   'name': 'q1',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.catalog import get_model as _get_model\n'
                                               '>>> from helpers.course.feedback import first_failure\n'
                                               ">>> _spec = _get_model('qwen2.5-1.5b')\n"
                                               ">>> first_failure((lambda: lora_params is not ..., 'not done yet: set lora_params'), (lambda: isinstance(lora_params, int) and lora_params > 0, "
                                               "lambda: f'a positive whole number of parameters, got {lora_params!r}'), (lambda: lora_params % (8 * _spec.layers) == 0, lambda: f'r x (d_in + d_out) "
                                               "per adapted matrix, in each of the {_spec.layers} layers: a multiple of 8 x {_spec.layers}, got {lora_params}'), (lambda: lora_params < 8 * "
                                               "_spec.layers * 4 * _spec.hidden, 'too many: this model uses grouped-query attention, so v_proj outputs kv_heads x head_dim, not the hidden size'))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
