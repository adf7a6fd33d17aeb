OK_FORMAT = True

test = {   'name': 'q1',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.course.feedback import first_failure\n'
                                               ">>> _one = estimate_memory('qwen2.5-7b', 'nf4', context=8192, batch=1, device='cuda').total_gb\n"
                                               ">>> _wide = estimate_memory('qwen2.5-7b', 'bf16', context=8192, batch=4, device='cuda').total_gb\n"
                                               ">>> first_failure((lambda: predicted_gb is not ..., 'not done yet: set predicted_gb'), (lambda: isinstance(predicted_gb, float) and predicted_gb > 0, "
                                               "lambda: f'a number of GB, got {predicted_gb!r}'), (lambda: predicted_gb > _one + 1e-06, lambda: f'{predicted_gb:.2f} GB fits one conversation: the "
                                               "cache grows with every conversation served at once (batch)'), (lambda: predicted_gb < _wide, lambda: f'{predicted_gb:.2f} GB is a 16-bit figure: the "
                                               "weights are in NF4'))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
